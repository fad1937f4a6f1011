import { defineConfig } from "vite";

// Built into the Python package so `kubeline server` serves it without Node.
// The code is written against React's API and types; the build runs it on Preact (preact/compat,
// the same API in ~15 kB instead of react-dom's ~180 kB), which is most of the first paint's
// script: parsing and running the bundle was the largest share of it.
export default defineConfig({
  resolve: {
    alias: [
      { find: /^react-dom\/client$/, replacement: "preact/compat/client" },
      { find: /^react-dom$/, replacement: "preact/compat" },
      { find: /^react\/jsx-runtime$/, replacement: "preact/jsx-runtime" },
      { find: /^react\/jsx-dev-runtime$/, replacement: "preact/jsx-runtime" },
      { find: /^react$/, replacement: "preact/compat" },
    ],
  },
  build: { outDir: "../src/kubeline/ui/static", emptyOutDir: true, chunkSizeWarningLimit: 900 },
  server: { proxy: { "/api": "http://127.0.0.1:8080" } },
});
