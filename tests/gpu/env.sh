# tests/gpu/env.sh: sourced on the GPU machine with $BIN set (the bundle folder): when cuBLAS /
# cudart 13 are not on the loader path but PyTorch's pip packages carry them, their folders are
# added to LD_LIBRARY_PATH.
if ldd "$BIN/mslab-gpu-tests" | grep -q "not found"; then
    extra=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for lib in glob.glob(os.path.join(sp, "nvidia", "*", "lib", "lib*.so.13")):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
PY
)
    [ -n "$extra" ] && export LD_LIBRARY_PATH="$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "libraries from PyTorch's packages: $extra"
fi
