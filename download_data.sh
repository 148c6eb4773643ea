#!/usr/bin/env bash
# Downloads one of the CycleGAN paper's datasets into datasets/NAME, safely:
#   bash download_data.sh [NAME]          (default summer2winter_yosemite; "summer2winter" works too)
# The zip goes to a temporary file, is checked (unzip -t; size and SHA-256 where we know them),
# is extracted into a temporary folder, and only then moved into place. Any failure exits non-zero
# and leaves neither a partial dataset nor a stray zip behind.
# CYCLEGAN_DATA_URL overrides the base URL (the script appends /NAME.zip), for mirrors and tests.
set -euo pipefail

BASE_URL="${CYCLEGAN_DATA_URL:-https://efrosgans.eecs.berkeley.edu/cyclegan/datasets}"
VALID="apple2orange summer2winter_yosemite horse2zebra monet2photo cezanne2photo ukiyoe2photo
vangogh2photo maps facades iphone2dslr_flower ae_photos mini mini_pix2pix mini_colorization"

fail() { echo "download_data.sh: $*" >&2; exit 1; }

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

echo "downloading $URL"
if command -v curl >/dev/null; then
  curl -fL --retry 3 --connect-timeout 20 -o "$ZIP" "$URL" || fail "download of $URL failed (curl exit $?)"
elif command -v wget >/dev/null; then
  wget -O "$ZIP" "$URL" || fail "download of $URL failed (wget exit $?)"
else
  fail "needs curl or wget to download; install one of them"
fi

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
