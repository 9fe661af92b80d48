// test_db.c: reading results.db in tests (test.h): the first value of a query, a row count.
#include <stdio.h>
#include <string.h>

#include "../core/store.h"
#include "test.h"

static int first_cb(int n, const char *const *names, const char *const *vals, void *ctx) {
    (void)names;
    snprintf(ctx, 8192, "%s", n > 0 && vals[0] ? vals[0] : "NULL");
    return 1;
}
static int count_cb(int n, const char *const *names, const char *const *vals, void *ctx) {
    (void)n, (void)names, (void)vals;
    (*(int *)ctx)++;
    return 0;
}

const char *test_db_first(Store *s, const char *sql) {
    static char buf[8192];
    strcpy(buf, "(no row)");
    CHECK(store_select(s, sql, first_cb, buf) == 0);
    return buf;
}

int test_db_rows(Store *s, const char *sql) {
    int n = 0;
    CHECK(store_select(s, sql, count_cb, &n) == 0);
    return n;
}

const char *test_db_value(const char *db, const char *sql) {
    Store *s;
    if (store_open(&s, db, 1)) return "(no db)";
    const char *v = test_db_first(s, sql);
    store_close(s);
    return v;
}
