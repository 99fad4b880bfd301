/**
 * The functions of a Lua source and their lengths in lines (from the line of `function`
 * to the line of its `end`), for "no function over N lines" checks. A small scanner:
 * comments and strings are skipped, `function`, `if`, `do` (for/while bodies) and
 * `repeat` open blocks, `end` and `until` close them.
 */
export interface LuaFunction {
  /** The name after `function` (`M.run`, `Handle:respond`), or `(anonymous)`. */
  readonly name: string;
  readonly line: number;
  readonly lines: number;
}

/** The source with comments and string contents blanked (newlines kept, so line numbers hold). */
function blank(src: string): string {
  let out = '';
  let i = 0;
  const keepNewlines = (s: string) => s.replace(/[^\n]/g, ' ');
  while (i < src.length) {
    const rest = src.slice(i);
    const long = /^(--)?\[(=*)\[/.exec(rest);
    if (long) {
      const close = `]${long[2]}]`;
      const end = src.indexOf(close, i + long[0].length);
      const stop = end < 0 ? src.length : end + close.length;
      out += keepNewlines(src.slice(i, stop));
      i = stop;
    } else if (rest.startsWith('--')) {
      const end = src.indexOf('\n', i);
      const stop = end < 0 ? src.length : end;
      out += keepNewlines(src.slice(i, stop));
      i = stop;
    } else if (rest[0] === '"' || rest[0] === "'") {
      let j = i + 1;
      while (j < src.length && src[j] !== rest[0] && src[j] !== '\n') j += src[j] === '\\' ? 2 : 1;
      out += `"${keepNewlines(src.slice(i + 1, j))}"`;
      i = j + 1;
    } else {
      out += src[i];
      i += 1;
    }
  }
  return out;
}

export function luaFunctions(src: string): LuaFunction[] {
  const text = blank(src);
  const found: LuaFunction[] = [];
  const stack: Array<{ kind: string; name: string; line: number }> = [];
  let line = 1;
  const re = /\n|\b(function|if|do|repeat|end|until|while|for)\b(\s*[A-Za-z_][\w.:]*)?/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    if (m[0] === '\n') {
      line += 1;
      continue;
    }
    const word = m[1];
    // `while ... do` and `for ... do` open one block, at their `do`.
    if (word === 'while' || word === 'for') continue;
    if (word === 'function') stack.push({ kind: word, name: (m[2] ?? '').trim() || '(anonymous)', line });
    else if (word === 'if' || word === 'do' || word === 'repeat') stack.push({ kind: word, name: '', line });
    else {
      const open = stack.pop();
      if (!open) throw new Error(`unbalanced '${word}' at line ${line}`);
      if (open.kind === 'function') found.push({ name: open.name, line: open.line, lines: line - open.line + 1 });
    }
    // The name matched after a keyword other than `function` is code: scan it again.
    if (word !== 'function' && m[2]) re.lastIndex -= m[2].length;
  }
  if (stack.length > 0) throw new Error(`unclosed '${stack[stack.length - 1].kind}' from line ${stack[stack.length - 1].line}`);
  return found;
}
