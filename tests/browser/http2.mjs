// A page loaded over https:// from the example server (with [tls], certificate signed by
// a CA made for this run, which Chromium trusts through its own certificate store, not
// by ignoring errors) opens a WebSocket to its own origin and echoes a message. The
// page and the socket must both go over HTTP/2: the socket as an extended CONNECT
// stream of the page's connection (RFC 8441). The browser's side is read here through
// the DevTools protocol; scripts/browser-test.sh checks the server's side in its log.
// Run by scripts/browser-test.sh.
//
// usage: HOME=DIR_WITH_NSSDB node tests/browser/http2.mjs BASE_URL
import { launch, STEP_MS } from "./launch.mjs";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node http2.mjs BASE_URL");
  process.exit(2);
}
const socketUrl = new URL("/echo", base).href.replace(/^http/, "ws");

const browser = await launch();
const watchdog = setTimeout(() => {
  console.error("http2 browser test: took longer than 60s");
  process.exit(1);
}, 60_000);

try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const devtools = await context.newCDPSession(page);
  await devtools.send("Network.enable");
  let pageProtocol = null;
  devtools.on("Network.responseReceived", ({ type, response }) => {
    if (type === "Document") pageProtocol = response.protocol;
  });
  let socketStatus = null;
  devtools.on("Network.webSocketHandshakeResponseReceived", ({ response }) => {
    socketStatus = response.status;
  });

  await page.goto(base);
  const echoed = await page.evaluate((target) => new Promise((resolve, reject) => {
    const socket = new WebSocket(target);
    socket.onopen = () => socket.send("over HTTP/2");
    socket.onmessage = (event) => { socket.close(1000, "done"); resolve(event.data); };
    socket.onclose = (event) => reject(new Error(`closed ${event.code} before the echo`));
    socket.onerror = () => reject(new Error("the socket failed"));
  }), socketUrl);

  if (pageProtocol !== "h2") {
    throw new Error(`the page came over ${pageProtocol}, expected h2`);
  }
  if (echoed !== "over HTTP/2") {
    throw new Error(`echo was ${JSON.stringify(echoed)}`);
  }
  // Over HTTP/1.1 the handshake's status is 101; over HTTP/2 it is 200.
  if (socketStatus !== 200) {
    throw new Error(`the socket's handshake answered ${socketStatus}, expected 200 (HTTP/2)`);
  }
  console.log(`http2 browser test: the page came over ${pageProtocol}, its socket opened ` +
              `with ${socketStatus} on the same connection and echoed`);
  await context.close();
} catch (error) {
  console.error(`http2 browser test failed: ${error.message}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await browser.close();
}
