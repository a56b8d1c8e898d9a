import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { highlight } from "../lib/highlight";
import { jumboEmojiCount, parseMarkdown, plainText, safeHref } from "../lib/markdown";
import { CodeBlock, RichText } from "./RichText";

const html = (text: string) => renderToStaticMarkup(<RichText text={text} />);

describe("markdown constructs", () => {
  it("bold, italic, underline, strikethrough", () => {
    expect(html("**b** *i* _j_ __u__ ~~s~~")).toBe("<strong>b</strong> <em>i</em> <em>j</em> <u>u</u> <del>s</del>");
  });

  it("nests emphasis", () => {
    expect(html("***both***")).toMatch(/<(em|strong)><(em|strong)>both<\/(em|strong)><\/(em|strong)>/);
    expect(html("__*under italic*__")).toBe("<u><em>under italic</em></u>");
  });

  it("spoilers start hidden and are buttons", () => {
    const out = html("a ||secret|| b");
    expect(out).toContain('role="button"');
    expect(out).toContain('aria-label="Spoiler, press to reveal"');
    expect(out).toContain("secret");
  });

  it("inline code keeps markup characters literal", () => {
    expect(html("`**not bold**`")).toBe('<code class="md-code">**not bold**</code>');
  });

  it("fenced code blocks keep their language and text", () => {
    const nodes = parseMarkdown("```rust\nfn main() {}\n```");
    expect(nodes).toEqual([{ type: "codeBlock", lang: "rust", content: "fn main() {}" }]);
    expect(html("```\nplain <b>\n```")).toBe('<pre class="md-pre"><code class="hljs">plain &lt;b&gt;</code></pre>');
  });

  it("highlights code with known languages into spans, without HTML", async () => {
    const tree = await highlight('let x = "<script>";', "js");
    const flat = JSON.stringify(tree);
    expect(flat).toContain("hljs-keyword");
    expect(flat).toContain("<script>"); // as a string value, to be escaped by React
    expect(await highlight("x", "no-such-language")).toEqual(["x"]);
    expect(renderToStaticMarkup(<CodeBlock lang="js" code="let a" />)).toContain("language-js");
  });

  it("quotes: '> ' lines and '>>> ' for the rest", () => {
    expect(html("> quoted\nnot")).toBe('<blockquote class="md-quote">quoted</blockquote>not');
    expect(html(">>> all\nof it")).toBe('<blockquote class="md-quote">all<br/>of it</blockquote>');
    expect(html("a > b")).toBe("a &gt; b");
  });

  it("headings and subtext only at a line start", () => {
    expect(html("# Title")).toBe('<span class="md-h md-h1" role="heading" aria-level="3">Title</span>');
    expect(html("### Small")).toContain("md-h3");
    expect(html("#### four")).toBe("#### four");
    expect(html("not # a heading")).toBe("not # a heading");
    expect(html("-# fine print")).toBe('<span class="md-subtext">fine print</span>');
  });

  it("lists, bulleted and numbered", () => {
    expect(html("- one\n- **two**")).toBe('<ul class="md-list"><li>one</li><li><strong>two</strong></li></ul>');
    expect(html("3. c\n4. d")).toBe('<ol class="md-list" start="3"><li>c</li><li>d</li></ol>');
  });

  it("keeps line breaks", () => {
    expect(html("one\ntwo")).toBe("one<br/>two");
  });

  it("escapes", () => {
    expect(html("\\*not italic\\*")).toBe("*not italic*");
  });

  it("edits re-render: new text, new tree", () => {
    expect(renderToStaticMarkup(<RichText text="**v1**" />)).toBe("<strong>v1</strong>");
    expect(renderToStaticMarkup(<RichText text="~~v2~~" />)).toBe("<del>v2</del>");
  });
});

describe("links", () => {
  it("autolinks open in a new tab without opener or referrer and show their target", () => {
    const out = html("see https://example.org/a?b=1 now");
    expect(out).toBe(
      'see <a href="https://example.org/a?b=1" target="_blank" rel="noopener noreferrer" title="https://example.org/a?b=1" class="md-link">https://example.org/a?b=1</a> now',
    );
  });

  it("<url> autolinks", () => {
    expect(html("<https://example.org>")).toContain('href="https://example.org/"');
  });

  it("masked links show the real target next to the text", () => {
    const out = html("[your bank](https://evil.example/login)");
    expect(out).toContain(">your bank</a>");
    expect(out).toContain('<span class="md-link-target" data-testid="link-target"> (https://evil.example/login)</span>');
  });

  it("a masked link whose text is its target needs no second copy", () => {
    expect(html("[https://example.org/](https://example.org/)")).not.toContain("md-link-target");
  });
});

describe("message text is never HTML (XSS)", () => {
  it("<img onerror> is text", () => {
    const out = html('<img src=x onerror="alert(1)">');
    expect(out).not.toContain("<img");
    expect(out).toContain("&lt;img");
  });

  it("<script> is text", () => {
    const out = html("<script>alert(1)</script>");
    expect(out).not.toContain("<script");
    expect(out).toContain("&lt;script&gt;");
  });

  it("javascript: links stay inert text", () => {
    const out = html("[click](javascript:alert(1))");
    expect(out).not.toContain("<a");
    expect(out).not.toContain("href");
    expect(html("<javascript:alert(1)>")).not.toContain("href");
    expect(html("javascript:alert(1)")).not.toContain("href");
  });

  it("data: and vbscript: targets are not links either", () => {
    expect(html("[x](data:text/html,<script>alert(1)</script>)")).not.toContain("href");
    expect(html("[x](vbscript:msgbox)")).not.toContain("href");
  });

  it("attributes cannot be injected through a URL", () => {
    const out = html('https://example.org/"onmouseover="alert(1)');
    expect(out).not.toMatch(/ onmouseover=/);
  });

  it("markup inside code stays text", () => {
    expect(html("```html\n<img src=x onerror=alert(1)>\n```")).not.toContain("<img");
  });

  it("safeHref keeps only http(s) and mailto", () => {
    expect(safeHref("https://a.example/")).toBe("https://a.example/");
    expect(safeHref("mailto:a@b.example")).toBe("mailto:a@b.example");
    expect(safeHref("JaVaScRiPt:alert(1)")).toBeNull();
    expect(safeHref("file:///etc/passwd")).toBeNull();
    expect(safeHref("not a url")).toBeNull();
  });
});

describe("emoji", () => {
  it("one to three emoji are shown large", () => {
    expect(jumboEmojiCount("👍")).toBe(1);
    expect(jumboEmojiCount(" 🎉 🎉🎉 ")).toBe(3);
    expect(jumboEmojiCount("👨‍👩‍👧‍👦")).toBe(1); // one grapheme (ZWJ family)
    expect(jumboEmojiCount("🇫🇷")).toBe(1);
    expect(jumboEmojiCount("❤️")).toBe(1);
    expect(jumboEmojiCount("👍👍👍👍")).toBe(0);
    expect(jumboEmojiCount("ok 👍")).toBe(0);
    expect(jumboEmojiCount("123")).toBe(0);
    expect(jumboEmojiCount("")).toBe(0);
    expect(html("🎉🎉")).toBe('<span class="md-jumbo" data-testid="jumbo-emoji">🎉🎉</span>');
  });
});

describe("plain text", () => {
  it("drops markup and hides spoilers", () => {
    expect(plainText("**hi** ||secret|| [x](https://e.example)\n> q")).toBe("hi ▮▮▮ x q");
  });
});

describe("robustness", () => {
  it("never throws on odd input", () => {
    for (const s of ["", "```", "||", "**", "> ", ">>>", "[](", "\\", "# ", "- ", "`".repeat(50), "*_~|".repeat(200)]) {
      expect(() => html(s)).not.toThrow();
    }
  });
});
