// The bench scripts' command lines: `--name value` options and `--name` flags, one definition for
// all of them.
export const args = process.argv.slice(2);
export function opt(name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}
export const flag = (name: string): boolean => args.includes(`--${name}`);
