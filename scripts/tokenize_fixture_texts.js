#!/usr/bin/env node
'use strict';
// Tokenizes texts with the same library the package uses at run time (Hugging Face
// tokenizers), so the fixture generator's golden outputs start from exactly the ids the
// engine will see.
//
// Usage: node scripts/tokenize_fixture_texts.js <tokenizer.json> [items.json]
//   items: JSON list of {"text": string, "maxLength": number | null} (read from stdin when no
//   file is given). maxLength null means no truncation.
// Prints a JSON list of {"ids": [...], "tokens": [...]} in the same order.

const fs = require('node:fs');
const { Tokenizer } = require('tokenizers');

async function main() {
  const [tokenizerPath, itemsPath] = process.argv.slice(2);
  if (!tokenizerPath) {
    process.stderr.write('usage: tokenize_fixture_texts.js <tokenizer.json> [items.json]\n');
    process.exit(2);
  }
  const items = JSON.parse(fs.readFileSync(itemsPath ?? 0, 'utf8'));
  const tokenizer = Tokenizer.fromFile(tokenizerPath);
  const out = [];
  for (const { text, maxLength } of items) {
    // Truncation is tokenizer state; set it per item so items with different limits can share
    // one call. The limit counts the template's <s> and </s>, which truncation keeps.
    if (maxLength == null) tokenizer.disableTruncation();
    else tokenizer.setTruncation(maxLength);
    const enc = await tokenizer.encode(text);
    out.push({ ids: enc.getIds(), tokens: enc.getTokens() });
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
