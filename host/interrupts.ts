// Pure parsers for the interrupt side of the node facts: /proc/interrupts lines, and which IRQ is
// which NIC queue, judged from the action name the driver registered. Known name shapes:
//   virtio_net  virtio2-input.0 / virtio2-output.0 (one IRQ per rx and per tx queue), virtio2-config
//   ixgbe/i40e/ice/bnxt  eth0-TxRx-3 (combined), ice-eth0-TxRx-3, eth0-rx-1 / eth0-tx-1
//   mlx5        mlx5_comp3@pci:0000:81:00.0 (combined), mlx5_async0@... (control)
//   ena         ena-Tx-Rx-3 ; hv_netvsc / gve similar
// Control/misc vectors (config, async, link state, mailbox, flow director) are not queues.

export interface IrqLine {
  irq: number;
  /** Total interrupts over all CPUs so far. */
  count: number;
  /** Action name(s), e.g. "virtio2-input.0" (comma-separated when shared). */
  name: string;
}

export function parseInterrupts(text: string): IrqLine[] {
  const lines = text.split('\n');
  const ncpu = (lines[0] ?? '')
    .trim()
    .split(/\s+/)
    .filter((t) => /^CPU\d+$/.test(t)).length;
  const out: IrqLine[] = [];
  for (const line of lines.slice(1)) {
    const m = /^\s*(\d+):\s+(.*)$/.exec(line);
    if (!m) continue; // NMI, LOC, ... are not device IRQs
    const toks = m[2]!.trim().split(/\s+/);
    const counts = toks.slice(0, ncpu);
    const rest = toks.slice(ncpu);
    // After the chip name comes "<hwirq>-edge|level|fasteoi" (or just "edge"); the action follows it.
    let at = -1;
    rest.forEach((t, i) => {
      if (/(^|-)(edge|level|fasteoi|simple)$/i.test(t)) at = i;
    });
    const name = (at >= 0 ? rest.slice(at + 1) : rest.slice(-1)).join(' ');
    out.push({ irq: Number(m[1]), count: counts.reduce((a, c) => a + (Number(c) || 0), 0), name });
  }
  return out;
}

export type QueueKind = 'rx' | 'tx' | 'combined';
export interface QueueIrq {
  irq: number;
  name: string;
  queue: number;
  kind: QueueKind;
  count: number;
}

const CONTROL = /(config|async|ctrl|control|event|fdir|link|misc|lsc|mbx|mailbox|other|admin|aenq|mgmt|err)/i;

/** The NIC queue an IRQ serves, or undefined for control vectors and names without a queue number. */
export function classifyQueueIrq(line: IrqLine): QueueIrq | undefined {
  const name = line.name.split('@')[0]!.trim();
  if (!name || CONTROL.test(name)) return undefined;
  const nums = name.match(/\d+/g);
  if (!nums) return undefined;
  const queue = Number(nums[nums.length - 1]);
  const tail = name.slice(0, name.lastIndexOf(nums[nums.length - 1]!));
  let kind: QueueKind = 'combined';
  if (/tx-?rx|rx-?tx|comp|combined|fp-?$/i.test(tail)) kind = 'combined';
  else if (/(rx|input)[-._]*$/i.test(tail)) kind = 'rx';
  else if (/(tx|output)[-._]*$/i.test(tail)) kind = 'tx';
  return { irq: line.irq, name: line.name, queue, kind, count: line.count };
}

/**
 * Queue IRQs of one interface. `deviceIrqs` are the MSI vectors of its PCI function (msi_irqs)
 * when known; otherwise IRQs are matched by name ("eth0-TxRx-0", "eth0-rx-1").
 */
export function interfaceQueueIrqs(ifname: string, lines: IrqLine[], deviceIrqs: number[] | undefined): QueueIrq[] {
  const mine =
    deviceIrqs && deviceIrqs.length > 0
      ? lines.filter((l) => deviceIrqs.includes(l.irq))
      : lines.filter((l) =>
          l.name.split(/[\s,]+/).some((n) => n.startsWith(`${ifname}-`) || n.includes(`-${ifname}-`)),
        );
  // A vector named exactly like the interface is its link/misc vector (ixgbe, igb), not a queue.
  return mine
    .filter((l) => l.name.split('@')[0]!.trim() !== ifname)
    .map(classifyQueueIrq)
    .filter((q): q is QueueIrq => q !== undefined)
    .sort((a, b) => a.queue - b.queue || a.irq - b.irq);
}
