// How the log worker hands lines to LogView, and how LogView keeps them.
//
// A line is one string "at SEP stream SEP stage SEP attempt SEP text". A batch is one string
// (its lines back to back) and where each line ends (a Uint32Array, transferred, not copied):
// 200,000 lines are then a few hundred strings and typed arrays on the page, not 200,000
// strings. The garbage collector's pauses grow with the number of objects it marks and moves;
// with one object per line they were the page's longest tasks while a big log streamed.

/** The separator of a line's fields (a control character that a log line never needs to show). */
export const SEP = "\u0001";

export type Batch = { text: string; ends: Uint32Array };

/** The lines of a log as the batches they came in; a line is read by its index. */
export class LogLines {
  private batches: Batch[] = [];
  private firsts: number[] = [];  // index of each batch's first line
  length = 0;

  append(batch: Batch): void {
    if (!batch.ends.length) return;
    this.batches.push(batch);
    this.firsts.push(this.length);
    this.length += batch.ends.length;
  }

  /** Line `i` (0 <= i < length). */
  get(i: number): string {
    let lo = 0, hi = this.firsts.length - 1;
    while (lo < hi) {  // the last batch whose first line is <= i
      const mid = (lo + hi + 1) >> 1;
      if (this.firsts[mid] <= i) lo = mid; else hi = mid - 1;
    }
    const { text, ends } = this.batches[lo], k = i - this.firsts[lo];
    return text.slice(k ? ends[k - 1] : 0, ends[k]);
  }
}

/** The fields of a line: [at, stream, text, stage, attempt]. */
export function logLine(l: string): [string, string, string, string, number] {
  const a = l.indexOf(SEP), b = l.indexOf(SEP, a + 1), c = l.indexOf(SEP, b + 1), d = l.indexOf(SEP, c + 1);
  return [l.slice(0, a), l.slice(a + 1, b), l.slice(d + 1), l.slice(b + 1, c), Number(l.slice(c + 1, d))];
}
