#!/usr/bin/env bash
# Downloads one of the CycleGAN paper's datasets into datasets/NAME, or one of the authors'
# trained generators into pretrained/NAME.pth, safely:
#   bash download_data.sh [NAME]            (default summer2winter_yosemite; "summer2winter" too)
#   bash download_data.sh pretrained NAME   (e.g. summer2winter_yosemite)
# Everything goes to a temporary folder beside the target, is checked (a dataset's zip with
# unzip -t, and its size and SHA-256 where we know them; a generator by loading it with torch),
# and only then moved into place. Any failure exits non-zero and leaves nothing behind.
# CYCLEGAN_DATA_URL and CYCLEGAN_PRETRAINED_URL override the base URLs (the script appends
# /NAME.zip or /NAME.pth), for mirrors and tests. PYTHON names a Python that has torch.
set -euo pipefail

BASE_URL="${CYCLEGAN_DATA_URL:-https://efrosgans.eecs.berkeley.edu/cyclegan/datasets}"
MODELS_URL="${CYCLEGAN_PRETRAINED_URL:-http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models}"
VALID="apple2orange summer2winter_yosemite horse2zebra monet2photo cezanne2photo ukiyoe2photo
vangogh2photo maps facades iphone2dslr_flower ae_photos mini mini_pix2pix mini_colorization"
MODELS="apple2orange orange2apple summer2winter_yosemite winter2summer_yosemite horse2zebra
zebra2horse monet2photo style_monet style_cezanne style_ukiyoe style_vangogh sat2map map2sat
cityscapes_photo2label cityscapes_label2photo facades_photo2label facades_label2photo
iphone2dslr_flower"

fail() { echo "download_data.sh: $*" >&2; exit 1; }
fetch() {  # fetch URL FILE
  echo "downloading $1"
  if command -v curl >/dev/null; then
    curl -fL --retry 3 --connect-timeout 20 -o "$2" "$1" || fail "download of $1 failed (curl exit $?); nothing was kept"
  elif command -v wget >/dev/null; then
    wget -O "$2" "$1" || fail "download of $1 failed (wget exit $?); nothing was kept"
  else
    fail "needs curl or wget to download; install one of them"
  fi
}

if [ "${1:-}" = "pretrained" ]; then
  NAME="${2:-}"
  case " $(echo $MODELS) " in
    *" $NAME "*) ;;
    *) fail "unknown model '$NAME'; valid names: $(echo $MODELS)" ;;
  esac
  TARGET="pretrained/$NAME.pth"
  if [ -f "$TARGET" ]; then echo "$TARGET is already there, nothing to do"; exit 0; fi
  PYTHON="${PYTHON:-python3}"
  "$PYTHON" -c "import torch" 2>/dev/null || fail "needs a Python with torch to check the file; '$PYTHON' has none (set PYTHON=...)"
  mkdir -p pretrained
  WORK="$(mktemp -d "pretrained/.download-$NAME.XXXXXX")"  # same disk as the target: mv is a rename
  trap 'rm -rf "$WORK"' EXIT
  trap 'exit 130' INT TERM
  fetch "$MODELS_URL/$NAME.pth" "$WORK/$NAME.pth"
  # No checksums are published for these files. weights_only loading cannot run code, and the
  # keys must be a ResNet generator's (its first 7x7 layer and its residual blocks).
  "$PYTHON" - "$WORK/$NAME.pth" 2>/dev/null <<'PY' || fail "$MODELS_URL/$NAME.pth is not a generator's weights (an error page, a truncated download, or another file); nothing was kept"
import sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
assert tuple(state["model.1.weight"].shape[1:]) == (3, 7, 7)
assert any(".conv_block." in key for key in state)
PY
  mv "$WORK/$NAME.pth" "$TARGET"
  echo "$TARGET is ready; use it with: python cyclegan.py --translate PHOTO --checkpoint $TARGET"
  exit 0
fi

NAME="${1:-summer2winter_yosemite}"
[ "$NAME" = "summer2winter" ] && NAME="summer2winter_yosemite"
[ "$NAME" = "cityscapes" ] && fail "cityscapes cannot be redistributed; get it from its own site"
case " $(echo $VALID) " in
  *" $NAME "*) ;;
  *) fail "unknown dataset '$NAME'; valid names: $(echo $VALID)" ;;
esac

# Known archives: size in bytes and SHA-256 (the server's files as of 2026).
EXPECTED_SIZE=""
EXPECTED_SHA256=""
if [ "$NAME" = "summer2winter_yosemite" ]; then
  EXPECTED_SIZE=132640856
  EXPECTED_SHA256=167fe1726807a9d22bd106b4a6c0bd7953b688af924ac1bf967439c4961e49f9
fi

TARGET="datasets/$NAME"
count_images() {  # prints "folder: N images" for each folder of the dataset
  for dir in "$1"/*/; do
    echo "  $(basename "$dir"): $(find "$dir" -type f | grep -ciE '\.(jpe?g|png|bmp|webp|tiff?|gif)$') images"
  done
}
if [ -d "$TARGET" ]; then
  # Datasets are only ever moved here whole, so an existing folder is a complete download.
  echo "$TARGET is already there, nothing to do:"
  count_images "$TARGET"
  exit 0
fi

for tool in unzip; do command -v "$tool" >/dev/null || fail "needs '$tool'; install it first"; done
mkdir -p datasets
WORK="$(mktemp -d "datasets/.download-$NAME.XXXXXX")"  # same disk as the target: mv is a rename
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
ZIP="$WORK/$NAME.zip"
URL="$BASE_URL/$NAME.zip"

fetch "$URL" "$ZIP"

SIZE=$(wc -c < "$ZIP" | tr -d ' ')
if [ -n "$EXPECTED_SIZE" ] && [ "$SIZE" != "$EXPECTED_SIZE" ]; then
  fail "$URL gave $SIZE bytes, expected $EXPECTED_SIZE: truncated or changed; nothing was kept, try again"
fi
unzip -tq "$ZIP" >/dev/null 2>&1 || fail "$URL is not a valid zip ($SIZE bytes): damaged download; nothing was kept, try again"
if [ -n "$EXPECTED_SHA256" ]; then
  if command -v sha256sum >/dev/null; then SUM=$(sha256sum "$ZIP" | cut -d' ' -f1)
  else SUM=$(shasum -a 256 "$ZIP" | cut -d' ' -f1); fi
  [ "$SUM" = "$EXPECTED_SHA256" ] || fail "SHA-256 of $URL is $SUM, expected $EXPECTED_SHA256; nothing was kept"
fi

unzip -q "$ZIP" -d "$WORK/unpacked" || fail "unzip failed (disk full?); nothing was kept"
# The official zips hold one top folder named like the dataset; accept a zip without one, too.
SOURCE="$WORK/unpacked/$NAME"
[ -d "$SOURCE" ] || SOURCE="$WORK/unpacked"
mv "$SOURCE" "$TARGET" || fail "could not move the dataset to $TARGET"
echo "$TARGET is ready:"
count_images "$TARGET"
