// Two Chromium pages open the example server's chat, join one channel, and a line
// typed in one appears in the other. Run by scripts/browser-test.sh.
//
// usage: node tests/browser/chat.mjs BASE_URL SCREENSHOT_PATH
import { launch, STEP_MS } from "./launch.mjs";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node chat.mjs BASE_URL SCREENSHOT_PATH");
  process.exit(2);
}

const browser = await launch();
const watchdog = setTimeout(() => {
  console.error("chat browser test: took longer than 60s");
  process.exit(1);
}, 60_000);

try {
  async function open(name) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    await page.goto(base);
    await page.fill("#name", name);
    await page.fill("#channel", "lobby");
    await page.click("#join");
    await page.locator("#log li", { hasText: "joined #lobby" }).waitFor();
    return page;
  }
  const alice = await open("alice");
  const bob = await open("bob");

  await alice.fill("#text", "hello from alice");
  await alice.press("#text", "Enter");
  await bob.locator("#log li", { hasText: "#lobby alice: hello from alice" }).waitFor();
  await alice.locator("#log li", { hasText: "#lobby alice: hello from alice" }).waitFor();

  await bob.fill("#text", "hi alice, bob here");
  await bob.press("#text", "Enter");
  await alice.locator("#log li", { hasText: "#lobby bob: hi alice, bob here" }).waitFor();

  await alice.screenshot({ path: screenshot });
  console.log("chat browser test: a message typed in one page appeared in the other");
} catch (error) {
  console.error(`chat browser test failed: ${error.message}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await browser.close();
}
