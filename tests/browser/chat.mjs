// Two Chromium pages open the example server's chat, join one channel, and a line
// typed in one appears in the other, over permessage-deflate: Chromium offers it, the
// example server accepts it by default, and a long line goes compressed both ways (the
// server's /metrics counts the compressed bytes). Run by scripts/browser-test.sh.
//
// usage: node tests/browser/chat.mjs BASE_URL SCREENSHOT_PATH
import { launch, STEP_MS } from "./launch.mjs";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node chat.mjs BASE_URL SCREENSHOT_PATH");
  process.exit(2);
}

/** A counter from the server's Prometheus /metrics, by its direction label (0 if absent). */
async function metric(name, direction) {
  const text = await (await fetch(new URL("metrics", base))).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{direction="${direction}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
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

  // The socket negotiated compression...
  const extensions = await alice.evaluate(() => socket.extensions);
  if (!extensions.startsWith("permessage-deflate")) {
    throw new Error(`Chromium's socket did not negotiate permessage-deflate: ${JSON.stringify(extensions)}`);
  }
  // ...and a line over the server's 256-byte threshold goes compressed both ways:
  // Chromium compresses what it sends, the server what it fans out.
  const long = `a long line, ${"to be compressed on the way ".repeat(40)}end`;
  const received = async () => (await metric("estuary_deflate_plain_bytes_total", "received"));
  const sent = async () => (await metric("estuary_deflate_plain_bytes_total", "sent"));
  const [receivedBefore, sentBefore] = [await received(), await sent()];
  await alice.fill("#text", long);
  await alice.press("#text", "Enter");
  await bob.locator("#log li", { hasText: "end" }).waitFor();
  // Metrics are reported at most once a second per busy connection.
  const deadline = Date.now() + STEP_MS;
  while ((await received()) <= receivedBefore || (await sent()) <= sentBefore) {
    if (Date.now() > deadline) {
      throw new Error(`the server counted no compressed message in or out: received ${await received()} (was ${receivedBefore}), sent ${await sent()} (was ${sentBefore})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  console.log(`chat browser test: negotiated "${extensions}"; compressed bytes counted both ways`);

  await alice.screenshot({ path: screenshot });
  console.log("chat browser test: a message typed in one page appeared in the other");
} catch (error) {
  console.error(`chat browser test failed: ${error.message}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await browser.close();
}
