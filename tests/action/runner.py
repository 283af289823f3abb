"""Runs a composite action's steps as a GitHub Actions runner would, for tests/namespace/ci_action.rs.

What is emulated, from the runner's documented behaviour: inputs with their defaults, `${{ }}`
expressions of the kinds action.yml uses (inputs.*, github.action_path, runner.temp,
steps.<id>.outputs.*), each `run` written to a file and run with `bash --noprofile --norc -eo
pipefail FILE` in the workspace, the files GITHUB_ENV, GITHUB_OUTPUT, GITHUB_PATH, GITHUB_STATE
and GITHUB_STEP_SUMMARY (a fresh GITHUB_OUTPUT per step, read back into steps.<id>.outputs),
and the action's outputs. What is not: `if:`, `uses:` inside the composite, other shells.

Usage: runner.py ACTION_DIR RUNNER_DIR INPUTS_JSON; prints a JSON object: the action's outputs,
what each file of RUNNER_DIR holds after the run, and the exit code of the failing step (or 0).
"""

import json
import os
import re
import subprocess
import sys

import yaml

EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def main():
    action_dir, runner_dir, inputs_json = sys.argv[1:4]
    with open(os.path.join(action_dir, "action.yml"), encoding="utf-8") as f:
        action = yaml.safe_load(f)
    assert action["runs"]["using"] == "composite", action["runs"]
    given = json.loads(inputs_json)
    unknown = set(given) - set(action.get("inputs", {}))
    if unknown:
        sys.exit(f"inputs the action does not declare: {sorted(unknown)}")
    inputs = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    inputs.update({name: str(value) for name, value in given.items()})

    temp = os.path.join(runner_dir, "temp")
    workspace = os.path.join(runner_dir, "workspace")
    files = {name: os.path.join(runner_dir, name.lower()) for name in
             ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_STATE", "GITHUB_STEP_SUMMARY")}
    for path in [temp, workspace]:
        os.makedirs(path, exist_ok=True)
    for path in files.values():
        open(path, "a", encoding="utf-8").close()
    steps = {}

    def evaluate(text):
        def one(match):
            name = match.group(1)
            if name.startswith("inputs."):
                return inputs[name[len("inputs."):]]
            if name == "github.action_path":
                return os.path.abspath(action_dir)
            if name == "runner.temp":
                return temp
            parts = name.split(".")
            if len(parts) == 4 and parts[0] == "steps" and parts[2] == "outputs":
                return steps.get(parts[1], {}).get(parts[3], "")
            raise SystemExit(f"runner.py cannot evaluate ${{{{ {name} }}}}")
        return EXPRESSION.sub(one, str(text))

    failed = 0
    for index, step in enumerate(action["runs"]["steps"]):
        assert step.get("shell") == "bash", f"step {index}: only shell: bash is emulated"
        output_file = os.path.join(runner_dir, f"output-{index}")
        open(output_file, "w", encoding="utf-8").close()
        script = os.path.join(temp, f"step-{index}.sh")
        with open(script, "w", encoding="utf-8") as f:
            f.write(evaluate(step["run"]))
        env = {key: value for key, value in os.environ.items() if not key.startswith("GITHUB_")}
        env.update(files)
        env.update({"GITHUB_OUTPUT": output_file, "GITHUB_ACTION_PATH": os.path.abspath(action_dir),
                    "GITHUB_WORKSPACE": workspace, "RUNNER_TEMP": temp, "CI": "true",
                    "GITHUB_ACTIONS": "true"})
        env.update({key: evaluate(value) for key, value in step.get("env", {}).items()})
        code = subprocess.call(["bash", "--noprofile", "--norc", "-eo", "pipefail", script],
                               cwd=workspace, env=env, stdin=subprocess.DEVNULL,
                               stdout=sys.stderr)
        outputs = {}
        with open(output_file, encoding="utf-8") as f:
            for line in f.read().splitlines():
                name, _, value = line.partition("=")
                outputs[name] = value
        if "id" in step:
            steps[step["id"]] = outputs
        if code != 0:
            failed = code
            break

    result = {
        "exit": failed,
        "outputs": {name: evaluate(spec["value"]) for name, spec in action.get("outputs", {}).items()},
        "files": {name: open(path, encoding="utf-8").read() for name, path in files.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
