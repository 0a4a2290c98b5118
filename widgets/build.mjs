// Bundle src/index.js (and the CSS it imports) into ../mlxnb/static/widget.{js,css}.
// Everything the widget needs at run time is inside the bundle: no CDN, works offline.
//
//   node build.mjs           production bundle: minified, no sourcemap (what the wheel ships)
//   node build.mjs --dev     readable bundle with inline sourcemaps
//   node build.mjs --watch   --dev, rebuilt on every change under src/ until stopped; with
//                            ANYWIDGET_HMR=1 in the kernel's environment the widget reloads live

import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { build, context } from "esbuild";

const { values: flags } = parseArgs({
  options: { dev: { type: "boolean", default: false }, watch: { type: "boolean", default: false } },
});
const dev = flags.dev || flags.watch;

const outfile = fileURLToPath(new URL("../mlxnb/static/widget.js", import.meta.url));

/** @type {import("esbuild").BuildOptions} */
const options = {
  entryPoints: [fileURLToPath(new URL("./src/index.js", import.meta.url))],
  bundle: true,
  format: "esm",
  target: ["es2020"],
  minify: !dev,
  // anywidget loads the module from a blob URL, so a sourcemap must be inline to be found.
  sourcemap: dev ? "inline" : false,
  legalComments: "eof",
  outfile,
  logLevel: dev ? "info" : "warning",
};

if (flags.watch) {
  // esbuild logs "[watch] build finished" after each rebuild; Ctrl+C stops it.
  const ctx = await context(options);
  await ctx.watch();
} else {
  await build(options);
}
