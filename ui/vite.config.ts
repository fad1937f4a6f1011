import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { defineConfig, type Plugin } from "vite";

/** Writes a .br and a .gz beside every built text file of 1 kB or more, compressed once at their
 * best levels; the server hands a browser the variant it accepts (kubeline/ui/serve.py). */
function precompress(): Plugin {
  let outDir = "";
  const walk = (dir: string): string[] => readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
  return {
    name: "kubeline-precompress",
    apply: "build",
    configResolved(config) { outDir = resolve(config.root, config.build.outDir); },
    closeBundle() {
      for (const file of walk(outDir)) {
        if (!/\.(js|css|html|svg|json|map)$/.test(file) || statSync(file).size < 1024) continue;
        const data = readFileSync(file);
        writeFileSync(`${file}.gz`, gzipSync(data, { level: 9 }));
        writeFileSync(`${file}.br`, brotliCompressSync(data, { params: {
          [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: data.length } }));
      }
    },
  };
}

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
  plugins: [pageChunks(), precompress()],
  resolve: {
    alias: [
      { find: /^react-dom\/client$/, replacement: "preact/compat/client" },
      { find: /^react-dom$/, replacement: "preact/compat" },
      { find: /^react\/jsx-runtime$/, replacement: "preact/jsx-runtime" },
      { find: /^react\/jsx-dev-runtime$/, replacement: "preact/jsx-runtime" },
      { find: /^react$/, replacement: "preact/compat" },
      // wouter's useSyncExternalStore shim (for React < 18): preact/compat has it built in.
      { find: /^use-sync-external-store\/shim(\/index\.js)?$/, replacement: "preact/compat" },
    ],
  },
  build: { outDir: "../src/kubeline/ui/static", emptyOutDir: true, chunkSizeWarningLimit: 900 },
  server: { proxy: { "/api": "http://127.0.0.1:8080" } },
});
