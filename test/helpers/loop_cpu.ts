// How much CPU the main thread spends between two turns of the event loop: what this process's own work blocks the
// loop for. Unlike a wall-clock delay it does not grow when other processes take the CPU, so a test can hold a server
// to "no request blocks the event loop for more than N ms" on a machine that is busy with other jobs.
// Linux: /proc/self/task/<main thread>/stat, utime + stime in clock ticks (USER_HZ, 100 per second).

import { readFileSync } from 'node:fs';

const TICK_MS = 10;

function mainThreadCpuMs(): number {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd (state) on
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS; // utime (14th), stime (15th)
}

/** Starts watching; stop() gives the most main-thread CPU (ms, ±10) spent between two timer turns. */
export function watchLoopCpu(): { stop(): number } {
  let last = mainThreadCpuMs();
  let max = 0;
  let on = true;
  const tick = () => {
    const now = mainThreadCpuMs();
    max = Math.max(max, now - last);
    last = now;
    if (on) timer = setTimeout(tick, 1);
  };
  let timer = setTimeout(tick, 1);
  return {
    stop() {
      on = false;
      clearTimeout(timer);
      tick();
      return max;
    },
  };
}
