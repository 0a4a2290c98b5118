// esbuild bundles imported stylesheets into widget.css; they export nothing.
declare module "*.css";
