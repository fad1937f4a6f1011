import { defineConfig, type Plugin } from "vite";

/** Fills index.html's PAGE_CHUNKS: for each lazy page (src/pages/X.tsx), the files of its chunk
 * and of the chunks it imports, but not the main script; index.html preloads the opened page's. */
function pageChunks(): Plugin {
  return {
    name: "kubeline-page-chunks",
    apply: "build",
    transformIndexHtml: {
      order: "post",
      handler(html, { bundle }) {
        const chunks = Object.values(bundle ?? {}).flatMap((c) => (c.type === "chunk" ? [c] : []));
        const byFile = new Map(chunks.map((c) => [c.fileName, c]));
        const pages: Record<string, string[]> = {};
        for (const chunk of chunks) {
          const page = chunk.isDynamicEntry && /\/src\/pages\/(\w+)\.tsx$/.exec(chunk.facadeModuleId ?? "");
          if (!page) continue;
          const files = new Set<string>();
          const visit = (file: string) => {
            if (files.has(file) || byFile.get(file)?.isEntry) return;
            files.add(file);
            byFile.get(file)?.imports.forEach(visit);
          };
          visit(chunk.fileName);
          pages[page[1]] = [...files].map((f) => `/${f}`);
        }
        if (!html.includes("/*PAGE_CHUNKS*/{}")) throw new Error("index.html lost its /*PAGE_CHUNKS*/{} placeholder");
        return html.replace("/*PAGE_CHUNKS*/{}", JSON.stringify(pages));
      },
    },
  };
}

// Built into the Python package so `kubeline server` serves it without Node.
// The code is written against React's API and types; the build runs it on Preact (preact/compat,
// the same API in ~15 kB instead of react-dom's ~180 kB), which is most of the first paint's
// script: parsing and running the bundle was the largest share of it.
export default defineConfig({
  plugins: [pageChunks()],
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
