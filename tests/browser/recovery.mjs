// The chat page recovers what it missed: bob's page goes offline and loses its socket,
// alice says lines meanwhile, and when bob's page is online again it reconnects by
// itself and shows those lines, marked as recovered, then live ones; closed and opened
// again (a reload) it rejoins from the last line it saw and shows what was said while it
// was closed; and with a position the server cannot recover from, it says that some
// lines were lost. Needs a server whose channels keep history (scripts/browser-test.sh
// starts it so). Run by scripts/browser-test.sh.
//
// usage: node tests/browser/recovery.mjs BASE_URL SCREENSHOT_PATH
import { launch, STEP_MS } from "./launch.mjs";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node recovery.mjs BASE_URL SCREENSHOT_PATH");
  process.exit(2);
}

const browser = await launch();
const watchdog = setTimeout(() => {
  console.error("recovery browser test: took longer than 90s");
  process.exit(1);
}, 90_000);

/** The texts of the log's lines with `selector` (e.g. "li.recovered"), in order. */
async function lines(page, selector) {
  return page.locator(`#log ${selector}`).allTextContents();
}

try {
  async function open(context, name) {
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    await page.goto(base);
    await page.fill("#name", name);
    await page.fill("#channel", "tunnel");
    await page.click("#join");
    await page.locator("#log li", { hasText: "joined #tunnel" }).waitFor();
    return page;
  }
  async function say(page, text) {
    await page.fill("#text", text);
    await page.press("#text", "Enter");
    await page.locator("#log li", { hasText: `alice: ${text}` }).waitFor();
  }
  const aliceContext = await browser.newContext();
  const bobContext = await browser.newContext();
  const alice = await open(aliceContext, "alice");
  let bob = await open(bobContext, "bob");

  await say(alice, "before the tunnel");
  await bob.locator("#log li", { hasText: "alice: before the tunnel" }).waitFor();

  // Bob's train enters a tunnel: the network goes, and the socket with it.
  await bobContext.setOffline(true);
  await bob.evaluate(() => socket.close());
  await bob.locator("#status", { hasText: "offline" }).waitFor();
  const missed = ["in the tunnel 1", "in the tunnel 2", "in the tunnel 3"];
  for (const text of missed) await say(alice, text);

  // Out of the tunnel: the page reconnects and rejoins from the last line it saw.
  await bobContext.setOffline(false);
  await bob.locator("#log li", { hasText: "recovered 3 lines said in #tunnel while you were away" }).waitFor();
  const recovered = await lines(bob, "li.recovered");
  const expected = missed.map((text) => `#tunnel alice: ${text}`);
  if (JSON.stringify(recovered) !== JSON.stringify(expected)) {
    throw new Error(`bob's recovered lines: ${JSON.stringify(recovered)}, expected ${JSON.stringify(expected)}`);
  }
  await say(alice, "out of the tunnel");
  await bob.locator("#log li:not(.recovered)", { hasText: "alice: out of the tunnel" }).waitFor();
  const all = await lines(bob, "li");
  const said = all.filter((text) => text.startsWith("#tunnel alice: "));
  if (said.length !== 5) {
    throw new Error(`bob's page shows ${said.length} of alice's 5 lines, some twice or missing: ${JSON.stringify(said)}`);
  }
  console.log("recovery browser test: lines said while the socket was down appeared, marked as recovered");
  await bob.screenshot({ path: screenshot });

  // Bob closes the tab; alice goes on; a new tab (the same storage) picks up from there.
  await bob.close();
  await say(alice, "while bob's tab was closed");
  bob = await bobContext.newPage();
  bob.setDefaultTimeout(STEP_MS);
  await bob.goto(base);
  await bob.locator("#log li.recovered", { hasText: "alice: while bob's tab was closed" }).waitFor();
  const reopened = await lines(bob, "li.recovered");
  if (reopened.length !== 1) {
    throw new Error(`the reopened tab recovered ${JSON.stringify(reopened)}, expected only the line said while it was closed`);
  }
  console.log("recovery browser test: a reopened tab rejoined from the last line it saw");

  // A position the server never gave (as after a Redis restart, a new epoch): told.
  await bob.evaluate(() => {
    localStorage.setItem("estuary-chat-positions", JSON.stringify({ tunnel: { offset: 1, epoch: "gone" } }));
  });
  await bob.reload();
  await bob.locator("#log li.error", { hasText: "some lines said in #tunnel while you were away were lost" }).waitFor();
  console.log("recovery browser test: a position the server could not recover from said that lines were lost");
} catch (error) {
  console.error(`recovery browser test failed: ${error.message}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await browser.close();
}
