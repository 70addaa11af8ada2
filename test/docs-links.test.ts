// The README and docs/ link to each other: every relative link must name a file that exists and,
// with a #fragment, a heading in it (GitHub's anchor rules), so moving or renaming a section shows.
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ENVIRONMENT_VARIABLES } from "../src/config.ts";
import { cleanupAfterEach, ROOT } from "./helpers.ts";

const { tempDir } = cleanupAfterEach();

const pages = ["README.md", ...fs.readdirSync(path.join(ROOT, "docs")).map((f) => `docs/${f}`)].filter((f) =>
  f.endsWith(".md"),
);

/** The text outside fenced code blocks, where a "link" is only an example. */
function prose(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```/gm, "");
}

/** GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens. */
function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

function anchorsIn(file: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  for (const match of prose(fs.readFileSync(file, "utf8")).matchAll(/^#{1,6}\s+(.+)$/gm)) {
    const base = anchorOf(match[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

describe("documentation links", () => {
  it("finds the pages", () => {
    expect(pages).toContain("README.md");
    expect(pages.length).toBeGreaterThan(3);
  });

  it.each(pages)("%s links only to files and headings that exist", (page) => {
    expect(brokenLinks(path.join(ROOT, page))).toEqual([]);
  });

  it("finds a link to a missing file or heading, and turns headings into GitHub's anchors", () => {
    const dir = tempDir();
    const page = path.join(dir, "page.md");
    fs.writeFileSync(
      page,
      "# Why not `cp` or `tar`\n[ok](#why-not-cp-or-tar) [gone](other.md) [no heading](page.md#nothing)\n```\n[in code](nowhere.md)\n```\n",
    );
    expect(brokenLinks(page)).toEqual(["other.md: no such file", "page.md#nothing: no such heading"]);
  });
});

function brokenLinks(file: string): string[] {
  const broken: string[] = [];
  for (const [, target] of prose(fs.readFileSync(file, "utf8")).matchAll(
    /\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g,
  )) {
    if (/^[a-z]+:/i.test(target!)) continue; // https:, mailto:
    const [where, fragment] = target!.split("#") as [string, string | undefined];
    const resolved = where === "" ? file : path.resolve(path.dirname(file), where);
    if (!fs.existsSync(resolved)) {
      broken.push(`${target}: no such file`);
      continue;
    }
    if (fragment !== undefined && resolved.endsWith(".md") && !anchorsIn(resolved).has(fragment)) {
      broken.push(`${target}: no such heading`);
    }
  }
  return broken;
}

describe("configuration documented", () => {
  const read = (file: string) => fs.readFileSync(path.join(ROOT, file), "utf8");

  it("has every variable the config reads in .env.example", () => {
    const example = read(".env.example");
    const missing = ENVIRONMENT_VARIABLES.filter((name) => !new RegExp(`^#? ?${name}=`, "m").test(example));
    expect(missing).toEqual([]);
  });

  it("has every variable in the README's configuration table (a `PREFIX_*` cell covers a family)", () => {
    const readme = read("README.md");
    const table = readme.slice(
      readme.indexOf("## Configuration"),
      readme.indexOf("\n## ", readme.indexOf("## Configuration") + 1),
    );
    const cells = [...table.matchAll(/`([A-Z][A-Z0-9_*]+)`/g)].map((m) => m[1]!);
    const patterns = cells.map((cell) => new RegExp(`^${cell.replaceAll("*", "[A-Z0-9_]+")}$`));
    expect(ENVIRONMENT_VARIABLES.length).toBeGreaterThan(20);
    expect(ENVIRONMENT_VARIABLES.filter((name) => !patterns.some((p) => p.test(name)))).toEqual([]);
  });
});
