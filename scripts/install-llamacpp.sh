#!/usr/bin/env bash
# Build llama.cpp's `llama-server` and `llama-quantize` from source, for the llamacpp engine.
#
#   scripts/install-llamacpp.sh
#
# The server inside the llama-cpp-python package answers one request at a time, so it cannot
# show what batching saves; llama.cpp's own server can (`--parallel N`, continuous batching).
# Its source comes from the package registry, inside the llama-cpp-python *source* package
# (vendor/llama.cpp), never as a binary fetched from elsewhere. cmake builds the two targets
# on the CPU backend only (no GPU backends, no CURL: the server never downloads a model).
#
# Idempotent: a second call that finds both binaries built from the same version returns at once.
#
# Environment:
#   PYTHON                       the Python whose pip downloads the source (default: python3)
#   HARNESS_LLAMACPP_DIR         where it is built (default: .llamacpp in the project, ignored by git)
#   LLAMA_CPP_PYTHON_VERSION     the source package's version (default: the one pinned below)
#   HARNESS_LLAMACPP_JOBS        parallel compile jobs (default: 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${HARNESS_LLAMACPP_DIR:-$root/.llamacpp}
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
jobs=${HARNESS_LLAMACPP_JOBS:-2}
python=${PYTHON:-python3}

if [ -x "$dest/bin/llama-server" ] && [ -x "$dest/bin/llama-quantize" ] \
   && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  echo "llama.cpp from llama-cpp-python $version already built in $dest"
  exit 0
fi

for tool in cmake g++ tar; do
  command -v "$tool" >/dev/null || { echo "install-llamacpp: $tool is needed (apt-get install cmake g++)" >&2; exit 2; }
done

mkdir -p "$dest"
rm -f "$dest/VERSION"
src=$dest/src
rm -rf "$src" && mkdir -p "$src"
echo "downloading the llama-cpp-python $version source package"
"$python" -m pip download -q --no-binary :all: --no-deps -d "$src" "llama-cpp-python==$version"
shopt -s nullglob
archives=("$src"/llama_cpp_python-*.tar.gz "$src"/llama-cpp-python-*.tar.gz)
archive=${archives[0]:-}
[ -n "$archive" ] || { echo "install-llamacpp: no source archive downloaded into $src" >&2; exit 1; }
tar -xzf "$archive" -C "$src"
llamas=("$src"/*/vendor/llama.cpp)
llama=${llamas[0]:-}
[ -n "$llama" ] || { echo "install-llamacpp: $archive holds no vendor/llama.cpp" >&2; exit 1; }

echo "building llama-server and llama-quantize ($jobs jobs; this takes minutes)"
cmake -S "$llama" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF \
  -DGGML_OPENCL=OFF -DGGML_RPC=OFF >"$dest/cmake-configure.log" 2>&1 \
  || { tail -n 20 "$dest/cmake-configure.log" >&2; exit 1; }
cmake --build "$dest/build" --config Release -j"$jobs" --target llama-server llama-quantize \
  >"$dest/cmake-build.log" 2>&1 || { tail -n 20 "$dest/cmake-build.log" >&2; exit 1; }

mkdir -p "$dest/bin"
cp "$dest/build/bin/llama-server" "$dest/build/bin/llama-quantize" "$dest/bin/"
# llama.cpp's own converter and its gguf-py, for `path:` models the gguf package alone cannot map
rm -rf "$dest/convert" && mkdir -p "$dest/convert"
cp "$llama/convert_hf_to_gguf.py" "$dest/convert/" 2>/dev/null || true
[ -d "$llama/gguf-py" ] && cp -r "$llama/gguf-py" "$dest/convert/"
printf '%s\n' "$version" >"$dest/VERSION"
echo "llama.cpp from llama-cpp-python $version built: $dest/bin/llama-server, $dest/bin/llama-quantize"
