// Renders message text (lib/markdown.ts) as React elements. Nothing here sets HTML: every string
// is a React text child, so `<img onerror=…>` in a message is shown as those characters.
import { Fragment, memo, useEffect, useState, type ReactNode } from "react";
import { highlight, type HlNode } from "../lib/highlight";
import { jumboEmojiCount, parseMarkdown, type MdNode } from "../lib/markdown";

function render(nodes: MdNode[], key = ""): ReactNode[] {
  return nodes.map((n, i) => {
    const k = `${key}${i}`;
    switch (n.type) {
      case "text":
        return <Fragment key={k}>{n.content}</Fragment>;
      case "br":
        return <br key={k} />;
      case "strong":
        return <strong key={k}>{render(n.content, k)}</strong>;
      case "em":
        return <em key={k}>{render(n.content, k)}</em>;
      case "u":
        return <u key={k}>{render(n.content, k)}</u>;
      case "del":
        return <del key={k}>{render(n.content, k)}</del>;
      case "spoiler":
        return <Spoiler key={k}>{render(n.content, k)}</Spoiler>;
      case "inlineCode":
        return (
          <code key={k} className="md-code">
            {n.content}
          </code>
        );
      case "codeBlock":
        return <CodeBlock key={k} lang={n.lang} code={n.content} />;
      case "blockQuote":
        return (
          <blockquote key={k} className="md-quote">
            {render(n.content, k)}
          </blockquote>
        );
      case "heading": {
        // Headings inside a message must not compete with the page's own outline.
        return (
          <span key={k} className={`md-h md-h${n.level}`} role="heading" aria-level={n.level + 2}>
            {render(n.content, k)}
          </span>
        );
      }
      case "subtext":
        return (
          <span key={k} className="md-subtext">
            {render(n.content, k)}
          </span>
        );
      case "list": {
        const items = n.items.map((item, j) => <li key={j}>{render(item, `${k}-${j}-`)}</li>);
        return n.ordered ? (
          <ol key={k} className="md-list" start={n.start}>
            {items}
          </ol>
        ) : (
          <ul key={k} className="md-list">
            {items}
          </ul>
        );
      }
      case "link":
        return <Link key={k} href={n.href} masked={n.masked}>{render(n.content, k)}</Link>;
    }
  });
}

/** A link opens in a new tab, never passes the opener or referrer, and shows where it goes. */
function Link({ href, masked, children }: { href: string; masked: boolean; children: ReactNode }) {
  return (
    <>
      <a href={href} target="_blank" rel="noopener noreferrer" title={href} className="md-link">
        {children}
      </a>
      {masked && (
        <span className="md-link-target" data-testid="link-target">
          {" "}
          ({href})
        </span>
      )}
    </>
  );
}

function Spoiler({ children }: { children: ReactNode }) {
  const [shown, setShown] = useState(false);
  return shown ? (
    <span className="md-spoiler shown">{children}</span>
  ) : (
    <span
      className="md-spoiler"
      role="button"
      tabIndex={0}
      aria-label="Spoiler, press to reveal"
      onClick={(e) => {
        e.stopPropagation();
        setShown(true);
      }}
      onKeyDown={(e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          e.stopPropagation();
          setShown(true);
        }
      }}
    >
      <span aria-hidden="true">{children}</span>
    </span>
  );
}

function renderHl(nodes: HlNode[], key = ""): ReactNode[] {
  return nodes.map((n, i) =>
    typeof n === "string" ? (
      <Fragment key={key + i}>{n}</Fragment>
    ) : (
      <span key={key + i} className={n.className}>
        {renderHl(n.children, `${key}${i}-`)}
      </span>
    ),
  );
}

/** A fenced code block: monospace at once, coloured once the highlighter (a lazy chunk) is loaded. */
export function CodeBlock({ lang, code }: { lang: string | null; code: string }) {
  const [tree, setTree] = useState<HlNode[] | null>(null);
  useEffect(() => {
    let live = true;
    highlight(code, lang).then(
      (t) => live && setTree(t),
      () => undefined,
    );
    return () => {
      live = false;
    };
  }, [code, lang]);
  return (
    <pre className="md-pre" data-lang={lang ?? undefined}>
      <code className={`hljs${lang ? ` language-${lang}` : ""}`}>{tree ? renderHl(tree) : code}</code>
    </pre>
  );
}

/** A message body: markdown, or large emoji when the message is only one to three of them. */
export const RichText = memo(function RichText({ text }: { text: string }) {
  const jumbo = jumboEmojiCount(text);
  if (jumbo > 0) {
    return (
      <span className="md-jumbo" data-testid="jumbo-emoji">
        {text.trim()}
      </span>
    );
  }
  return <>{render(parseMarkdown(text))}</>;
});
