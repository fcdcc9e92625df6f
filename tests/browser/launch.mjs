// Debian's Chromium as the browser tests launch it. Run by scripts/browser-test.sh.
import { chromium } from "playwright-core";

/** How long one step (a launch, a page load, a wait for text) may take. */
export const STEP_MS = 10_000;

/** Headless Chromium: no sandbox (the tests run as root), no background traffic (this
 *  machine's closed network refuses it). */
export function launch() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: STEP_MS,
  });
}
