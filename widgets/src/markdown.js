// @ts-check
// Markdown → safe HTML for untrusted model output. Three layers: raw HTML in the markdown is
// shown as text, images are never fetched (a URL can carry the conversation out), and the
// result passes DOMPurify, which drops scripts, event handlers and javascript: URLs.

import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import c from "highlight.js/lib/languages/c";
import cpp from "highlight.js/lib/languages/cpp";
import css from "highlight.js/lib/languages/css";
import diff from "highlight.js/lib/languages/diff";
import go from "highlight.js/lib/languages/go";
import ini from "highlight.js/lib/languages/ini";
import java from "highlight.js/lib/languages/java";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import markdownLang from "highlight.js/lib/languages/markdown";
import plaintext from "highlight.js/lib/languages/plaintext";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import shell from "highlight.js/lib/languages/shell";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import { Marked } from "marked";

const LANGUAGES = {
  bash,
  c,
  cpp,
  css,
  diff,
  go,
  ini,
  java,
  javascript,
  json,
  markdown: markdownLang,
  plaintext,
  python,
  rust,
  shell,
  sql,
  typescript,
  xml,
  yaml,
};
for (const [name, language] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, language);

const FORBID_TAGS = [
  "style",
  "form",
  "input",
  "button",
  "textarea",
  "select",
  "option",
  "img",
  "picture",
  "video",
  "audio",
  "source",
  "iframe",
  "object",
  "embed",
  "svg",
  "math",
  "link",
  "meta",
  "base",
];

/**
 * @param {string} text
 * @returns {string}
 */
export function escapeHtml(text) {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

/**
 * Highlighted HTML for a code block's body (escaped text when the language is unknown).
 * @param {string} code
 * @param {string} lang
 * @returns {{html: string, language: string}}
 */
export function highlight(code, lang) {
  const name = (lang || "").trim().split(/\s+/)[0].toLowerCase();
  if (name && hljs.getLanguage(name)) {
    const result = hljs.highlight(code, { language: name, ignoreIllegals: true });
    return { html: result.value, language: name.replace(/[^\w-]/g, "") };
  }
  return { html: escapeHtml(code), language: "" };
}

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    html({ text }) {
      return escapeHtml(text);
    },
    code({ text, lang }) {
      const { html, language } = highlight(text, lang ?? "");
      const cls = language ? `hljs language-${language}` : "hljs";
      return `<pre><code class="${cls}">${html}</code></pre>\n`;
    },
    image({ href, text }) {
      return `<span class="mlxnb-image" title="${escapeHtml(href)}">[image: ${escapeHtml(text)}]</span>`;
    },
  },
});

/** @type {ReturnType<typeof DOMPurify> | null} */
let purifier = null;

function getPurifier() {
  if (purifier) return purifier;
  purifier = DOMPurify(window);
  purifier.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });
  return purifier;
}

/**
 * Sanitise an HTML string (no scripts, handlers, forms, styles, media or javascript: URLs).
 * @param {string} html
 * @returns {string}
 */
export function sanitize(html) {
  return getPurifier().sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS,
    FORBID_ATTR: ["style", "srcset", "action", "formaction"],
    ALLOW_DATA_ATTR: false,
  });
}

/**
 * Render untrusted markdown to sanitised HTML.
 * @param {string} text
 * @returns {string}
 */
export function renderMarkdown(text) {
  const html = /** @type {string} */ (marked.parse(text, { async: false }));
  return sanitize(html);
}
