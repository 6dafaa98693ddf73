import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// The build goes to the checkout's build/ui, where `septum ui` looks for it.
export default defineConfig({
  plugins: [react()],
  build: { outDir: "../build/ui", emptyOutDir: true, chunkSizeWarningLimit: 4000 },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
