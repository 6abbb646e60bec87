// Open a notebook's .py in JupyterLab (Debian's chromium, playwright-core), Run All, wait until every cell has
// run and the kernel is idle, save, wait past autosave, take a screenshot. Usage:
//   node run_all.mjs URL SCREENSHOT TIMEOUT_S
// Prints one JSON line: {"cells": n, "executed": n, "errors": [...]}
import { chromium } from "playwright-core";

const [url, screenshot, timeoutS] = process.argv.slice(2);
const deadline = Date.now() + Number(timeoutS) * 1000;
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
try {
  await page.goto(url);
  await page.waitForSelector(".jp-Notebook .jp-Cell", { timeout: 120000 });
  // the kernel the notebook names starts by itself; wait until the status bar says it is idle
  await page.waitForFunction(() => /\|\s*Idle/.test(document.querySelector(".jp-StatusBar-Widget, #jp-main-statusbar")
    ?.textContent ?? document.body.textContent), null, { timeout: 120000 });
  const started = () => page.waitForFunction(() => [...document.querySelectorAll(".jp-InputPrompt")]
    .some((p) => /\[(\*|\d+)\]/.test(p.textContent)), null, { timeout: 30000 }).then(() => true, () => false);
  // Run All: select every cell in command mode and run the selection (Control+Enter"); the Run menu if needed
  await page.click(".jp-Notebook .jp-Cell .jp-InputPrompt");
  await page.keyboard.press("Escape");
  await page.keyboard.press("Control+a");
  await page.keyboard.press("Control+Enter");
  if (!(await started())) {
    await page.getByRole("menuitem", { name: "Run", exact: true }).click();
    await page.locator(".lm-Menu-itemLabel", { hasText: /^Run All Cells$/ }).first().click();
    if (!(await started())) throw new Error("Run All did not start");
  }
  while (true) {
    if (Date.now() > deadline) throw new Error("Run All did not finish in time");
    await page.waitForTimeout(1000);
    const busy = await page.evaluate(() => [...document.querySelectorAll(".jp-InputPrompt")]
      .some((p) => p.textContent.includes("*")));
    const idle = await page.$(".jp-Notebook-ExecutionIndicator[data-status='idle']");
    if (!busy && idle) break;
  }
  const result = await page.evaluate(() => {
    const cells = [...document.querySelectorAll(".jp-Notebook .jp-CodeCell")];
    const executed = cells.filter((c) => /\[\d+\]/.test(c.querySelector(".jp-InputPrompt")?.textContent ?? ""));
    const errors = [...document.querySelectorAll(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")]
      .map((e) => e.textContent).filter((t) => /Traceback|Error:/.test(t)).map((t) => t.slice(0, 300));
    return { cells: cells.length, executed: executed.length, errors };
  });
  await page.keyboard.press("Control+s");
  await page.waitForTimeout(8000);  // past the autosave interval the test server sets (5 s)
  await page.screenshot({ path: screenshot, fullPage: false });
  // a dialog open now (e.g. "File Changed") is something a person would have to answer
  result.dialogs = await page.evaluate(() => [...document.querySelectorAll(".jp-Dialog")].map((d) => d.textContent.slice(0, 200)));
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
