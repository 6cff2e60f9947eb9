#!/usr/bin/env bash
# Run here, before a device call: fills .whl/ (git-ignored) with what the GPU machine lacks:
# Python 3.12 wheels of the service's web stack, at the versions in constraints.txt, and hey.
# Then: the device call carries .whl and runs `bash bench/gpu_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv annotated-types
  typing-inspection annotated-doc uvicorn python-multipart orjson asgi-lifespan sniffio pytest-asyncio
  mlxtend)
mkdir -p .whl
pins=()
for name in "${PACKAGES[@]}"; do
  pin=$(grep -i -E "^${name}==" constraints.txt | head -1)
  [ -n "$pin" ] || { echo "gpu_prepare: $name is not pinned in constraints.txt" >&2; exit 1; }
  pins+=("$pin")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${pins[@]}"
HEY=$(command -v hey || true)
if [ -z "$HEY" ]; then
  apt-get -o DPkg::Lock::Timeout=300 -q -y install hey >/dev/null
  HEY=$(command -v hey)
fi
cp "$HEY" .whl/hey
du -sh .whl
