#!/usr/bin/env bash
# Downloads one of the CycleGAN paper's datasets into datasets/NAME, or one of the authors'
# trained generators into pretrained/NAME.pth, safely:
#   bash download_data.sh [NAME]            (default summer2winter_yosemite; "summer2winter" too)
#   bash download_data.sh pretrained NAME   (e.g. summer2winter_yosemite)
# Everything goes to a temporary folder beside the target, is checked (a dataset's zip by its size
# and SHA-256 where they are published, and with unzip -t; a generator by loading it with torch),
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

# Size in bytes and SHA-256 of each archive, as TensorFlow Datasets publishes them (its file
# tensorflow_datasets/url_checksums/cycle_gan.txt, which also lists cityscapes; its summer2winter
# line equals our own measurement of the server's file in 2026). Nobody publishes them for
# ae_photos and the mini sets: those are checked with unzip -t only, and say so.
CHECKSUMS="
apple2orange 78456409 845a191e9af8926408ea597001cd03a452e3300a1f44a79fe329b3d59f6e3eb8
cezanne2photo 279885071 3a6c10ca21f9485862f1cbd707744b9dc258954a04631271d23a3605eeb63cff
facades 35135868 9a31ebf3a31b9b5cd195dd5bf62e9308e00cb94604d1019e3889ac84248695c0
horse2zebra 116867962 a74d9d392eecca9966b51287a76ca126af473d9de4f3e8fc0e9cda08fa1730a1
iphone2dslr_flower 339964458 8fcb5e374d631b107e1d961b8c4cd0a186aa2a4ff3e279923f4c426128de7113
maps 1476754427 639534f69dbf9f36bef8d6292a7698006361221f83f0285d7c9ca78afe6e8a9e
monet2photo 305231073 88f91b00fc228f97c9411fbf1880ec1d119c98f1722e4cfcfaa2fb35fac05b04
summer2winter_yosemite 132640856 167fe1726807a9d22bd106b4a6c0bd7953b688af924ac1bf967439c4961e49f9
ukiyoe2photo 292946532 02a2a2fb5ecf425ca1bf86aca7304377da64a2a1d3b86df54eb65e4068bf3b08
vangogh2photo 306590349 362c3473e70be0944bda08d49d660eafdc2854df55d697835b8186d1d79caaff
"
# Both stay empty for a name without a line.
read -r _ EXPECTED_SIZE EXPECTED_SHA256 <<< "$(echo "$CHECKSUMS" | grep "^$NAME " || true)"

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

[ -n "$EXPECTED_SHA256" ] || echo "no checksum is published for $NAME.zip: it is checked with unzip -t only"
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
