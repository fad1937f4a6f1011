import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Built into the Python package so `kubeline server` serves it without Node.
export default defineConfig({
  plugins: [react()],
  build: { outDir: "../src/kubeline/ui/static", emptyOutDir: true, chunkSizeWarningLimit: 900 },
  server: { proxy: { "/api": "http://127.0.0.1:8080" } },
});
