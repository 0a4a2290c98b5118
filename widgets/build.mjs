// Bundle src/index.js (and the CSS it imports) into ../mlxnb/static/widget.{js,css}.
// Everything the widget needs at run time is inside the bundle: no CDN, works offline.

import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const outfile = fileURLToPath(new URL("../mlxnb/static/widget.js", import.meta.url));

await build({
  entryPoints: [fileURLToPath(new URL("./src/index.js", import.meta.url))],
  bundle: true,
  format: "esm",
  target: ["es2020"],
  minify: true,
  legalComments: "eof",
  outfile,
  logLevel: "warning",
});
