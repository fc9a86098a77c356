#!/usr/bin/env bash
# The demo page in a real headless browser: serves `python -m flax_style.demo`, then Debian's
# Chromium, driven by playwright-core, picks the first bundled sample pair, sets alpha, clicks
# "Stylize", waits for the result image and saves a screenshot of the page. Run from anywhere:
#
#   bash scripts/demo_browser_check.sh [CKPT_DIR] [OUT_DIR]   # screenshot: OUT_DIR/demo.png (.)
#
# Without CKPT_DIR a tiny random-weight checkpoint is made (it shows the pipeline, not a useful
# stylizer). Needs `chromium` (apt-get install chromium), node and npm (playwright-core is
# installed into a temporary folder), and this package with its `demo` extra.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" JAX_PLATFORMS=cpu
work=$(mktemp -d)
out=${2:-.}
mkdir -p "$out"
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
trap 'echo "failed at line $LINENO; server log:" >&2; tail -5 "$work/server.log" >&2' ERR

ckpt=${1:-}
if [ -z "$ckpt" ]; then
  ckpt=$work/ckpt
  python3 -c "
import sys
from flax_style import checkpoint
from tests.test_stylize import CONFIG, make_stylizer
s = make_stylizer()
checkpoint.save_model(sys.argv[1], s.params, s.encoder_params, CONFIG)" "$ckpt"
fi

port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
python3 -m flax_style.demo --checkpoint "$ckpt" --port "$port" > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 180); do
  curl -sf "http://127.0.0.1:$port/" > /dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 1
done

npm install --silent --prefix "$work/npm" playwright-core > /dev/null
cat > "$work/check.js" <<'EOF'
const { chromium } = require(process.env.PLAYWRIGHT);
(async () => {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true });
  const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
  await page.goto(process.env.URL);
  // The first bundled sample pair (scikit-image) fills the content and style images; a second
  // style is uploaded through the third image's file input, mixed at the default weight 0.5.
  await page.locator("table tbody tr").first().click();
  await page.locator("input[type=file]").nth(2).setInputFiles(process.env.STYLE2);
  await page.waitForTimeout(2000);  // the upload reaches the server before the click
  await page.locator("#stylize").click();
  const result = page.locator("#result img");
  await result.waitFor({ state: "visible", timeout: 300000 });
  const size = await result.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  console.log(`result image ${size[0]}x${size[1]}`);
  await page.screenshot({ path: process.env.SHOT, fullPage: true });
  await browser.close();
})().catch((error) => { console.error(error); process.exit(1); });
EOF
style2=$(python3 -c "import os, skimage; print(os.path.join(os.path.dirname(skimage.__file__), 'data', 'coffee.png'))")
PLAYWRIGHT="$work/npm/node_modules/playwright-core" URL="http://127.0.0.1:$port/" \
  STYLE2="$style2" SHOT="$out/demo.png" node "$work/check.js"
echo "screenshot: $out/demo.png"
