// What a stream may send of a choice's text so far: never anything the final text will not start with.
// The engine's step events give newly stable text; stop strings can only be cut once they are complete, so the
// last (longest stop - 1) characters are held back until the choice finishes.

export class ChoiceText {
  private acc = '';
  private sentLen = 0;
  private readonly holdBack: number;
  finished = false;

  constructor(private readonly stop: string[]) {
    this.holdBack = stop.reduce((m, s) => Math.max(m, s.length - 1), 0);
  }

  get sent(): string {
    return this.acc.slice(0, this.sentLen);
  }

  /** Adds newly stable text; returns the delta that is safe to send now. */
  push(stable: string): string {
    if (this.finished || stable.length === 0) return '';
    this.acc += stable;
    let cap = this.acc.length - this.holdBack;
    for (const s of this.stop) {
      const i = this.acc.indexOf(s);
      if (i >= 0) cap = Math.min(cap, i);
    }
    if (cap <= this.sentLen) return '';
    const delta = this.acc.slice(this.sentLen, cap);
    this.sentLen = cap;
    return delta;
  }

  /** The rest of the final text, given what was sent. Null when the sent text is not a prefix of it (engine bug). */
  finish(finalText: string): string | null {
    this.finished = true;
    const sent = this.sent;
    if (!finalText.startsWith(sent)) return null;
    this.acc = finalText;
    this.sentLen = finalText.length;
    return finalText.slice(sent.length);
  }
}
