"""Widget streaming benchmark: tokens pushed at a fixed rate through the whole widget path.

A paced stand-in engine (the tiny CPU fixture model cannot generate 2000 tokens/s) feeds the
real path: ``ChatWidget`` → ``Conversation`` → batcher → comm → JupyterLab → the view's DOM
in headless Chromium. A message typed in the page starts each run. Reported per run:

- tokens that reached the browser's DOM (of those sent),
- how long after the kernel's last token the browser showed it (same clock: both are epoch ms),
- comm messages per second while streaming (ops batches; the IOPub limit is 1000/s).

Run: ``.venv/bin/python -m bench.bench_widget [--rate 2000] [--tokens 4000] [--runs 3]
[--json PATH]``. Exit status 1 when a target is missed (all tokens, ≤ 50 ms, ≤ 30 messages/s),
2 when it cannot run here (no Chromium, Playwright or built widget; ``--json`` records why).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.report import add_json_argument, figure, human_output, new_report, write_report

ROOT = Path(__file__).resolve().parents[1]
WIDGET_JS = ROOT / "mlxnb" / "static" / "widget.js"
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from lab import JupyterLab, launch_chromium  # noqa: E402

ENGINE = """\
import asyncio, time
from mlxnb._widget import ChatWidget
from mlxnb.events import ContentDelta, Done, Usage

class PacedEngine:
    model_id = "paced-stand-in"
    ready = True
    supports_thinking = False

    def __init__(self, tokens, rate):
        self.tokens, self.rate, self.finished = tokens, rate, 0.0

    def wait_ready(self, timeout=None):
        pass

    async def stream(self, messages, tools=None, enable_thinking=None, **options):
        start = time.perf_counter()
        for i in range(self.tokens):
            ahead = start + i / self.rate - time.perf_counter()
            if ahead > 0.002:
                await asyncio.sleep(ahead)
            yield ContentDelta(f"{i} ")
        self.finished = time.time()
        yield Done("stop", Usage(completion_tokens=self.tokens))

engine = PacedEngine(__TOKENS__, __RATE__)
widget = ChatWidget(engine)
sends = []
_send = widget.send
def send(content, buffers=None):
    if content.get("type") == "ops":
        sends.append(time.time())
    _send(content, buffers)
widget.send = send
widget"""

WATCH = """(expected) => {
  window.__arrived = null;
  const log = document.querySelector('[data-testid="log"]');
  const observer = new MutationObserver(() => {
    const parts = log.querySelectorAll('[data-testid="content"]');
    const text = parts.length ? parts[parts.length - 1].textContent : "";
    if (window.__arrived === null && text.length >= expected) {
      window.__arrived = Date.now();
      window.__text = text;
    }
  });
  observer.observe(log, { childList: true, subtree: true, characterData: true });
  window.__observer = observer;
}"""

KERNEL_EVAL = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({ code, store_history: false });
  let out = "";
  future.onIOPub = (msg) => { if (msg.header.msg_type === "stream") out += msg.content.text; };
  await future.done;
  return out;
}"""


def run_once(page: Any, tokens: int) -> dict[str, float]:
    expected = "".join(f"{i} " for i in range(tokens)).strip()
    page.evaluate(KERNEL_EVAL, "widget.clear(); sends.clear()")
    page.evaluate(WATCH, len(expected))
    chat = page.get_by_test_id("mlxnb-chat")
    chat.get_by_test_id("input").fill("go")
    chat.get_by_test_id("input").press("Enter")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=turn]')?.dataset.status === 'done'",
        timeout=120_000,
    )
    page.wait_for_function("() => window.__arrived !== null", timeout=10_000)
    arrived, text = page.evaluate("() => [window.__arrived, window.__text]")
    page.evaluate("() => window.__observer.disconnect()")
    kernel = json.loads(
        page.evaluate(
            KERNEL_EVAL,
            "import json; print(json.dumps([engine.finished, sends[0], sends[-1], len(sends)]))",
        )
    )
    finished, first_send, last_send, messages = kernel
    received = text.split()
    return {
        "tokens_sent": tokens,
        "tokens_received": sum(
            1 for a, b in zip(received, map(str, range(tokens)), strict=False) if a == b
        ),
        "last_token_lag_ms": arrived - finished * 1000,
        "kernel_flush_lag_ms": (last_send - finished) * 1000,
        "messages": messages,
        "messages_per_s": messages / max(finished - first_send, 1e-9),
    }


def missing_requirement() -> str | None:
    """Why the benchmark cannot run here (no Chromium, Playwright or built widget), or None."""
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        return "chromium is not installed (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not WIDGET_JS.exists():
        return f"the widget bundle {WIDGET_JS} is not built (make widget)"
    return None


def measure(args: argparse.Namespace, chromium: str) -> list[dict[str, float]]:
    """Start JupyterLab and Chromium, open the widget and stream ``args.runs`` times."""
    lab = JupyterLab()
    try:
        name = lab.write_notebook(
            "bench-widget.ipynb",
            [ENGINE.replace("__TOKENS__", str(args.tokens)).replace("__RATE__", str(args.rate))],
        )
        with launch_chromium(chromium) as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(lab.notebook_url(name))
            page.wait_for_function(
                "() => window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel"
                "?.status === 'idle'",
                timeout=60_000,
            )
            run_all = "notebook:run-all-cells"
            page.evaluate(
                f"async () => {{ await window.jupyterapp.commands.execute('{run_all}'); }}"
            )
            page.get_by_test_id("mlxnb-chat").wait_for()
            return [run_once(page, args.tokens) for _ in range(args.runs)]
    finally:
        lab.stop()


def print_table(args: argparse.Namespace, results: list[dict[str, float]]) -> bool:
    """Print one row per run and the verdict; returns whether every target was met."""
    print(f"widget path at {args.rate:.0f} tokens/s, {args.tokens} tokens per run:")
    print(
        f"{'run':>3} {'received':>12} {'last token lag':>15} {'flush lag':>10} {'msgs':>5}", end=""
    )
    print(f" {'msgs/s':>7}")
    for i, r in enumerate(results, 1):
        received = f"{r['tokens_received']:.0f}/{r['tokens_sent']:.0f}"
        lags = f"{r['last_token_lag_ms']:>12.1f} ms {r['kernel_flush_lag_ms']:>7.1f} ms"
        print(f"{i:>3} {received:>12} {lags} {r['messages']:>5.0f} {r['messages_per_s']:>7.1f}")
    worst_lag = max(r["last_token_lag_ms"] for r in results)
    worst_rate = max(r["messages_per_s"] for r in results)
    complete = all(r["tokens_received"] == r["tokens_sent"] for r in results)
    median_lag = statistics.median(r["last_token_lag_ms"] for r in results)
    print(
        f"all tokens arrived: {complete}; last token lag median {median_lag:.1f} ms, worst "
        f"{worst_lag:.1f} ms (target ≤ 50); comm messages worst {worst_rate:.1f}/s (target ≤ 30)"
    )
    return complete and worst_lag <= 50 and worst_rate <= 30


def to_results(runs: list[dict[str, float]], targets_met: bool) -> dict[str, Any]:
    """Every run and one figure per printed number, for ``--json``."""

    def column(key: str) -> list[float]:
        return [r[key] for r in runs]

    lags = column("last_token_lag_ms")
    return {
        "runs": runs,
        "complete": all(r["tokens_received"] == r["tokens_sent"] for r in runs),
        "targets_met": targets_met,
        "figures": {
            "tokens_received": figure(
                "tokens that reached the DOM (worst run)",
                column("tokens_received"),
                unit="tokens",
                value=min(column("tokens_received")),
                target=f"== {runs[0]['tokens_sent']:.0f}",
            ),
            "last_token_lag_ms": figure("last token lag, median", lags, unit="ms"),
            "last_token_lag_worst_ms": figure(
                "last token lag, worst", lags, unit="ms", value=max(lags), target="<= 50"
            ),
            "kernel_flush_lag_ms": figure(
                "kernel flush lag", column("kernel_flush_lag_ms"), unit="ms"
            ),
            "messages_per_s_worst": figure(
                "comm messages/s, worst",
                column("messages_per_s"),
                unit="msgs/s",
                value=max(column("messages_per_s")),
                target="<= 30",
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="tokens per second")
    parser.add_argument("--tokens", type=int, default=4000, help="tokens per run")
    parser.add_argument("--runs", type=int, default=3)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    report = new_report("widget", args)
    reason = missing_requirement()
    if reason is not None:
        print(f"widget benchmark skipped: {reason}", file=sys.stderr)
        write_report(report, None, args.json, skipped=reason)
        return 2
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None
    with human_output(args.json):
        runs = measure(args, chromium)
        targets_met = print_table(args, runs)
    write_report(report, to_results(runs, targets_met), args.json)
    return 0 if targets_met else 1


if __name__ == "__main__":
    sys.exit(main())
