/**
 * The kernel's input history (history_request): tail, range and search, as IPython answers them.
 * One kernel process is one session; history is kept in memory only.
 */
export interface HistoryEntry {
  line: number;
  input: string;
  output: string | null;
}

/** IPython's session numbers count from 1; 0 (and negative offsets to 0) mean "this session". */
export const SESSION = 1;

function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === "*") re += "[\\s\\S]*";
    else if (ch === "?") re += "[\\s\\S]";
    else if (ch === "[") {
      const end = glob.indexOf("]", i + 1);
      if (end < 0) re += "\\[";
      else {
        const body = glob.slice(i + 1, end).replace(/^!/, "^").replace(/\\/g, "\\\\");
        re += `[${body}]`;
        i = end;
      }
    } else re += ch.replace(/[.+^${}()|\\/\]]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

export class History {
  private entries: HistoryEntry[] = [];

  add(line: number, input: string, output: string | null): void {
    this.entries.push({ line, input, output });
  }

  private row(e: HistoryEntry, output: boolean): [number, number, string | [string, string | null]] {
    return [SESSION, e.line, output ? [e.input, e.output] : e.input];
  }

  query(req: { hist_access_type?: string; output?: boolean; n?: number; session?: number; start?: number; stop?: number; pattern?: string; unique?: boolean }) {
    const output = req.output === true;
    let picked: HistoryEntry[] = [];
    switch (req.hist_access_type) {
      case "tail":
        picked = req.n === undefined || req.n === null ? this.entries : this.entries.slice(-Math.max(0, req.n));
        break;
      case "range": {
        const session = req.session ?? 0;
        if (session !== 0 && session !== SESSION) break;
        const start = req.start ?? 1;
        const stop = req.stop ?? Number.POSITIVE_INFINITY;
        picked = this.entries.filter((e) => e.line >= start && e.line < stop);
        break;
      }
      case "search": {
        const re = globToRegExp(req.pattern ?? "*");
        picked = this.entries.filter((e) => re.test(e.input));
        if (req.unique) {
          const seen = new Set<string>();
          picked = picked.reverse().filter((e) => !seen.has(e.input) && (seen.add(e.input), true)).reverse();
        }
        if (req.n !== undefined && req.n !== null) picked = picked.slice(-Math.max(0, req.n));
        break;
      }
    }
    return picked.map((e) => this.row(e, output));
  }
}
