/**
 * `ternlab kernel install | list | remove`: the Jupyter kernelspec of ternlab.
 */
import { Command } from "commander";
import * as kernelspec from "../../kernel/kernelspec";

function parseEnv(value: string, prev: Record<string, string> = {}): Record<string, string> {
  const i = value.indexOf("=");
  if (i <= 0) throw new Error(`--env "${value}": write it as NAME=VALUE`);
  return { ...prev, [value.slice(0, i)]: value.slice(i + 1) };
}

export function register(program: Command): void {
  const kernel = program.command("kernel").description("install, list or remove the ternlab Jupyter kernel");

  kernel
    .command("install")
    .description("install the kernelspec so Jupyter, nbconvert, VS Code and `ternlab run` can start the ternlab kernel")
    .option("--user", "install for this user (the default)")
    .option("--prefix <dir>", "install into DIR/share/jupyter/kernels (e.g. a virtualenv or sys.prefix)")
    .option("--name <name>", "kernelspec name", kernelspec.DEFAULT_NAME)
    .option("--display-name <text>", "name shown in Jupyter's kernel menu")
    .option("--env <NAME=VALUE>", "environment variable for the kernel (repeatable)", parseEnv)
    .action((o: { user?: boolean; prefix?: string; name: string; displayName?: string; env?: Record<string, string> }) => {
      const dir = kernelspec.install(o);
      console.log(`Installed kernelspec ${o.name} in ${dir}`);
    });

  kernel
    .command("list")
    .description("list installed kernelspecs (ternlab's, or all with --all)")
    .option("--all", "list every kernelspec Jupyter sees")
    .option("--json", "print JSON")
    .action((o: { all?: boolean; json?: boolean }) => {
      const specs = kernelspec.listAll().filter((s) => o.all || s.ternlab);
      if (o.json) {
        console.log(JSON.stringify(Object.fromEntries(specs.map((s) => [s.name, { resource_dir: s.dir, ternlab: s.ternlab, spec: s.spec }])), null, 2));
        return;
      }
      if (specs.length === 0) {
        console.log("No ternlab kernelspec installed; run `ternlab kernel install`.");
        return;
      }
      const w = Math.max(...specs.map((s) => s.name.length));
      for (const s of specs) console.log(`  ${s.name.padEnd(w)}    ${s.dir}${o.all && s.ternlab ? "   (ternlab)" : ""}`);
    });

  kernel
    .command("remove")
    .alias("uninstall")
    .description("remove a ternlab kernelspec")
    .argument("[name]", "kernelspec name", kernelspec.DEFAULT_NAME)
    .option("--user", "only look in the user's kernelspecs")
    .option("--prefix <dir>", "only look in DIR/share/jupyter/kernels")
    .option("--force", "remove even if it is not a ternlab kernelspec")
    .action((name: string, o: { user?: boolean; prefix?: string; force?: boolean }) => {
      const dir = kernelspec.remove({ name, ...o });
      console.log(`Removed kernelspec ${name} from ${dir}`);
    });
}
