"""The operator's path of docs/operations.md, end to end, offline: ``make demo-aws``.

moto_server on 127.0.0.1 stands in for AWS (one account for the coordinating centre, one per
hospital). Every ``fedsilo`` command below is a separate process run exactly as the
walk-through of docs/operations.md prints it; the AWS side (accounts, admin credentials,
``cdk deploy``, the ECS task role's credentials) is done here with boto3 against moto:

* the stacks are synthesised by ``python app.py`` in the centre's CDK folder and created with
  moto's CloudFormation from those templates, one account each; the bucket, key and role
  names used afterwards are the stacks' outputs. Resource types moto's CloudFormation skips
  are listed as the stacks are created (docs/operations.md names them and what asserts them
  instead);
* IAM is enforced from the first preflight on: the hospitals act through the task role the
  hospital stack created, with the policies CDK wrote.

Each step prints a tick; the first failure prints a cross with the step's name and the tail
of its log, stops every process this script started (by its pid) and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsilo.testing.moto_iam import (
    ALLOW_EVERYTHING,
    FAKE_CREDENTIALS,
    Credentials,
    assume_role,
    create_user_key,
    enforce_iam,
)
from fedsilo.testing.moto_s3 import REGION, offline_env, start_moto_process
from fedsilo.testing.sts_presigned import PresignedStsFront

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FEDERATION = "eicu-mortality"
CENTRE_ACCOUNT = "111111111111"  # cdk.json's coordinating_account
HOSPITALS = {"site-001": "444444444444", "site-002": "555555555555", "site-003": "666666666666"}
OFFBOARDED = "site-003"
WAIT_S = 240.0

# The federation's settings come from the walk-through's arguments, never the caller's shell.
_UNSET = ("FEDSILO_EXCHANGE", "FEDSILO_ENDPOINT_URL", "FEDSILO_FEDERATION_ID")


class StepError(Exception):
    """A step's check did not hold; the message says what was found."""


@dataclass
class Walkthrough:
    work: Path
    rounds: int
    endpoint: str = ""
    sts_front: PresignedStsFront | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    step_count: int = 0
    started: float = field(default_factory=time.monotonic)

    # ---- steps, processes and their logs -------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.step_count += 1
        began = time.monotonic()
        try:
            yield
        except Exception as err:
            print(f"✗ {self.step_count:02d} {name}: {err}", flush=True)
            raise SystemExit(1) from err
        print(f"✓ {self.step_count:02d} {name} ({time.monotonic() - began:.1f} s)", flush=True)

    def env(self, credentials: Credentials | None) -> dict[str, str]:
        """A process environment: moto's endpoint, the given credentials, nothing else of AWS."""
        env = offline_env(self.work, unset=_UNSET)
        env.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint,
                # STS through the front that answers presigned requests (join proofs) as AWS
                "AWS_ENDPOINT_URL_STS": self.sts_front.url if self.sts_front else self.endpoint,
                "COLUMNS": "160",
                "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            }
        )
        if credentials is not None:
            env["AWS_ACCESS_KEY_ID"] = credentials.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = credentials.secret_access_key
            if credentials.session_token:
                env["AWS_SESSION_TOKEN"] = credentials.session_token
        return env

    def _log(self, name: str) -> Path:
        return self.work / "logs" / f"{self.step_count:02d}-{name}.log"

    def _record(self, who: str, cwd: Path, command: list[str]) -> None:
        shown = " ".join(command)
        with open(self.work / "commands.txt", "a") as handle:
            handle.write(f"[{who} in {cwd.name}/] {shown}\n")

    def run(
        self,
        who: str,
        command: list[str],
        cwd: Path,
        credentials: Credentials | None,
        timeout_s: float = 180.0,
    ) -> str:
        """Run one command to its end; its output, or StepError naming its exit code."""
        self._record(who, cwd, command)
        words = [Path(word).stem for word in command[:2]]
        log = self._log("-".join(words))
        executable = [str(BIN / command[0]), *command[1:]]
        if command[0] == "python":
            executable = [sys.executable, *command[1:]]
        with open(log, "wb") as out:
            done = subprocess.run(
                executable,
                cwd=cwd,
                env=self.env(credentials),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
        text = log.read_text(errors="replace")
        if done.returncode != 0:
            raise StepError(f"exit {done.returncode}: {_tail(text)}")
        return text

    def spawn(self, name: str, who: str, command: list[str], cwd: Path, creds: Credentials) -> None:
        self._record(who, cwd, command)
        log = self.work / "logs" / f"{name}.log"
        with open(log, "wb") as out:
            self.procs[name] = subprocess.Popen(
                [str(BIN / command[0]), *command[1:]],
                cwd=cwd,
                env=self.env(creds),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_exit(self, name: str, timeout_s: float = WAIT_S) -> str:
        proc = self.procs[name]
        log = self.work / "logs" / f"{name}.log"
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise StepError(f"{name} still running after {timeout_s:.0f} s") from None
        text = log.read_text(errors="replace")
        if code != 0:
            raise StepError(f"{name} exited {code}: {_tail(text)}")
        return text

    @contextmanager
    def paused(self, names: tuple[str, ...]) -> Iterator[None]:
        """Hold the named processes (each its own process group) still, then let them go on."""
        groups = [self.procs[n].pid for n in names if self.procs[n].poll() is None]
        for group in groups:
            os.killpg(group, signal.SIGSTOP)
        try:
            yield
        finally:
            for group in groups:
                os.killpg(group, signal.SIGCONT)

    def stop_all(self) -> None:
        """Stop every process this script started, by its pid: TERM, then KILL."""
        if self.sts_front is not None:
            self.sts_front.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def wait_for(self, what: str, predicate: Any, watch: tuple[str, ...] = ()) -> Any:
        give_up = time.monotonic() + WAIT_S
        while time.monotonic() < give_up:
            value = predicate()
            if value:
                return value
            for name in watch:
                code = self.procs[name].poll()
                if code is not None:
                    log = (self.work / "logs" / f"{name}.log").read_text(errors="replace")
                    raise StepError(f"{name} exited {code} while waiting for {what}: {_tail(log)}")
            time.sleep(0.2)
        raise StepError(f"timed out after {WAIT_S:.0f} s waiting for {what}")

    # ---- moto ------------------------------------------------------------------------------

    def start_moto(self) -> None:
        moto = start_moto_process(self.work / "logs" / "moto_server.log")
        self.endpoint = moto.endpoint
        self.procs["moto_server"] = moto.popen
        self.wait_for("moto_server to answer", moto.ready, watch=("moto_server",))
        self.sts_front = PresignedStsFront(moto.endpoint)

    def client(self, service: str, account: str | None, creds: Credentials | None = None) -> Any:
        """boto3 against moto; before IAM is enforced ``account`` picks moto's account."""
        return (creds or FAKE_CREDENTIALS).client(self.endpoint, service, account=account)

    def admin_credentials(self, account: str, user: str) -> Credentials:
        """An administrator of ``account`` (what ``aws sso login`` gives a person)."""
        return create_user_key(
            self.endpoint, account, user, policy=ALLOW_EVERYTHING, policy_name="administrator"
        )

    def deploy(self, stack: str, cdk_out: Path, creds: Credentials) -> dict[str, str]:
        """``cdk deploy`` of one synthesised template through moto's CloudFormation."""
        template = json.loads((cdk_out / f"{stack}.template.json").read_text())
        ssm = self.client("ssm", None, creds)
        ssm.put_parameter(Name="/cdk-bootstrap/hnb659fds/version", Value="21", Type="String")
        cfn = self.client("cloudformation", None, creds)
        cfn.create_stack(
            StackName=stack,
            TemplateBody=json.dumps(template),
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
        found = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        if found["StackStatus"] != "CREATE_COMPLETE":
            raise StepError(f"{stack}: {found['StackStatus']} {found.get('StackStatusReason')}")
        made = {
            r["LogicalResourceId"]
            for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
            if r.get("ResourceType")
        }
        skipped = sorted(
            {r["Type"] for name, r in template["Resources"].items() if name not in made}
        )
        with open(self.work / "moto-skipped-resource-types.txt", "a") as handle:
            handle.write(f"{stack}: {', '.join(skipped) or 'none'}\n")
        return {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}

    def assume(self, role_arn: str, creds: Credentials) -> Credentials:
        """The task role's credentials, as ECS hands them to the hospital's container."""
        sts = self.client("sts", None, creds)
        return assume_role(sts, role_arn, "fedsilo-client", duration_s=3600)


def _tail(text: str, lines: int = 12) -> str:
    return "\n    " + "\n    ".join(text.strip().splitlines()[-lines:])


def federation_yaml(rounds: int, kms_key_arn: str) -> str:
    """The federation's settings, which the centre hands every hospital with its approval.

    Secure aggregation is on: each hospital masks its update with the key ``onboard request``
    made in its ``fedsilo-state`` folder, so the aggregator only ever sees the sum; each
    hospital also trains with DP-SGD of its own choosing (``client run --dp-target-epsilon``).
    """
    return (
        f"federation_id: {FEDERATION}\n"
        f"rounds: {rounds}\n"
        "seed: 7\n"
        f"data: {{synthetic: {{hospitals: {len(HOSPITALS)}, mean_stays: 80}}}}\n"
        "round: {min_sites: 2, deadline_s: 120, poll_interval_s: 0.2}\n"
        f"exchange: {{kms_key_id: '{kms_key_arn}'}}\n"
        "privacy: {secagg: {enabled: true}}\n"
        "simulation: {client_timeout_s: 300}\n"
    )


def walk(w: Walkthrough) -> None:
    centre = w.work / "centre"
    centre.mkdir()
    with w.step("start moto_server on 127.0.0.1 (a free port)"):
        w.start_moto()
    with w.step(f"coordinating centre: AWS account {CENTRE_ACCOUNT} and its administrator"):
        centre_admin = w.admin_credentials(CENTRE_ACCOUNT, "centre-admin")
    with w.step("coordinating centre: a CDK project whose cdk.json lists no hospital yet"):
        project = json.loads((REPO / "cdk.json").read_text())
        project["app"] = f"{sys.executable} {REPO / 'app.py'}"
        project["context"]["fedsilo"]["hospitals"] = []
        (centre / "cdk.json").write_text(json.dumps(project, indent=2) + "\n")
    with w.step("coordinating centre: python app.py (synthesise the aggregator stack)"):
        w.run("centre", ["python", str(REPO / "app.py")], centre, None, timeout_s=300)
    with w.step("coordinating centre: deploy FedsiloEicuMortalityAggregator (moto CloudFormation)"):
        outputs = w.deploy("FedsiloEicuMortalityAggregator", centre / "cdk.out", centre_admin)
        bucket, kms_key = outputs["ExchangeBucketName"], outputs["ExchangeKeyArn"]
        if f"s3://{bucket}" != f"s3://fedsilo-{FEDERATION}-{CENTRE_ACCOUNT}":
            raise StepError(f"the stack's bucket {bucket} is not the one onboarding assumes")
    exchange = f"s3://{bucket}"

    admins: dict[str, Credentials] = {}
    folders: dict[str, Path] = {}
    for site, account in HOSPITALS.items():
        folders[site] = w.work / site
        folders[site].mkdir()
        with w.step(f"{site}: AWS account {account} and its administrator"):
            admins[site] = w.admin_credentials(account, f"{site}-admin")
        with w.step(f"{site}: fedsilo onboard request"):
            w.run(
                site,
                [
                    "fedsilo",
                    "onboard",
                    "request",
                    "--federation",
                    FEDERATION,
                    "--site-id",
                    site,
                    "--account-id",
                    account,
                    "--region",
                    REGION,
                ],
                folders[site],
                admins[site],
            )
            shutil.copy(folders[site] / f"join-request-{site}.json", centre)
        with w.step(f"coordinating centre: fedsilo onboard approve join-request-{site}.json"):
            printed = w.run(
                "centre",
                ["fedsilo", "onboard", "approve", f"join-request-{site}.json"],
                centre,
                centre_admin,
            )
            if "npx cdk deploy" not in printed:
                raise StepError(f"no deploy command printed: {_tail(printed)}")

    with w.step("coordinating centre: python app.py (the hospital stacks, aggregator redeploy)"):
        w.run("centre", ["python", str(REPO / "app.py")], centre, None, timeout_s=300)
    roles: dict[str, str] = {}
    tasks: dict[str, Credentials] = {}
    for site, account in HOSPITALS.items():
        stack = "FedsiloEicuMortalityHospital" + "".join(p.title() for p in site.split("-"))
        with w.step(f"{site}: deploy {stack} in account {account} (moto CloudFormation)"):
            roles[site] = w.deploy(stack, centre / "cdk.out", admins[site])["ClientRoleArn"]
            expected = f"arn:aws:iam::{account}:role/fedsilo/{FEDERATION}-{site}"
            if roles[site] != expected:
                raise StepError(f"role {roles[site]} is not the registered {expected}")
        with w.step(f"{site}: ECS hands its task the role's credentials (sts:AssumeRole)"):
            # ECS assumes the task role (it trusts ecs-tasks.amazonaws.com only), so this is
            # done before IAM is enforced: moto would hold the admin to the trust policy
            tasks[site] = w.assume(roles[site], admins[site])

    with w.step("IAM enforced from here on (moto-api/reset-auth)"):
        enforce_iam(w.endpoint)
    for site in HOSPITALS:
        with w.step(f"{site}: fedsilo onboard check (inside its task role)"):
            w.run(
                site,
                [
                    "fedsilo",
                    "onboard",
                    "check",
                    "--federation",
                    FEDERATION,
                    "--site-id",
                    site,
                    "--exchange",
                    exchange,
                    "--kms-key-id",
                    kms_key,
                ],
                folders[site],
                tasks[site],
            )

    with w.step("coordinating centre: federation.yaml, handed to every hospital"):
        settings = federation_yaml(w.rounds, kms_key)
        for folder in [centre, *folders.values()]:
            (folder / "federation.yaml").write_text(settings)
    with w.step("coordinating centre: fedsilo server run (started)"):
        w.spawn(
            "server",
            "centre",
            [
                "fedsilo",
                "server",
                "run",
                "--config",
                "federation.yaml",
                "--exchange",
                exchange,
                "--out",
                "runs",
            ],
            centre,
            centre_admin,
        )
    for site in HOSPITALS:
        with w.step(f"{site}: fedsilo client run in its task role (started)"):
            w.spawn(
                site,
                site,
                [
                    "fedsilo",
                    "client",
                    "run",
                    "--site-id",
                    site,
                    "--config",
                    "federation.yaml",
                    "--exchange",
                    exchange,
                    "--state-dir",
                    "fedsilo-state",
                    "--dp-target-epsilon",
                    "8",
                ],
                folders[site],
                tasks[site],
            )
    with w.step("coordinating centre: fedsilo status --watch (started)"):
        w.spawn(
            "status",
            "centre",
            ["fedsilo", "status", "--federation", FEDERATION, "--exchange", exchange, "--watch"],
            centre,
            centre_admin,
        )

    s3 = w.client("s3", None, centre_admin)

    def closed(round_index: int) -> dict[str, Any] | None:
        key = f"federations/{FEDERATION}/rounds/{round_index:06d}/result.json"
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        found: dict[str, Any] = json.loads(body)
        return found

    everyone = ("server", *HOSPITALS)
    with w.step("round 1 closes with every hospital accepted"):
        first = w.wait_for("round 1's result.json", lambda: closed(1), watch=everyone)
        accepted = sorted(d["site_id"] for d in first["accepted"])
        if accepted != sorted(HOSPITALS):
            raise StepError(f"round 1 accepted {accepted}")
    # moto evaluates bucket-policy conditions without the request's context, so it holds the
    # offboarding's deny against every caller, the aggregator and the other hospitals included:
    # they are held still while the deny is in place, and it is lifted before they go on. What
    # the deny does in AWS is evaluated in tests/stacks/test_stacks_revocation.py.
    with w.paused((*everyone, "status")):
        with w.step(f"coordinating centre: fedsilo offboard --site-id {OFFBOARDED}"):
            w.run("centre", ["fedsilo", "offboard", "--site-id", OFFBOARDED], centre, centre_admin)
        with w.step(f"the exchange bucket policy now denies {OFFBOARDED} (then lifted: moto only)"):
            policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
            if "RevokedHospitalAccounts" not in [st.get("Sid") for st in policy["Statement"]]:
                raise StepError(f"no deny of {OFFBOARDED}'s account in the bucket policy: {policy}")
            s3.delete_bucket_policy(Bucket=bucket)
    with w.step("the aggregator and the three hospitals finish (exit 0), every round unmasked"):
        served = w.wait_exit("server")
        for site in HOSPITALS:
            w.wait_exit(site)
        unmasked = served.count('"event": "secagg_unmasked"')
        if unmasked != w.rounds:
            raise StepError(f"{unmasked} rounds ran secure aggregation, not {w.rounds}")
        spent = [x for x in served.splitlines() if x.startswith("privacy: DP-SGD epsilon")]
        if not spent or any(site not in spent[0] for site in HOSPITALS):
            raise StepError(f"server run printed no epsilon per hospital: {_tail(served)}")
        print(f"    {spent[0]}", flush=True)
    with w.step(f"a later round refused {OFFBOARDED}'s update (revoked_site)"):
        refused = [
            r
            for r in range(2, w.rounds + 2)
            if any(
                d["site_id"] == OFFBOARDED and d.get("reason") == "revoked_site"
                for d in (closed(r) or {}).get("rejected", [])
            )
        ]
        if not refused:
            raise StepError(f"no round after the offboarding rejected {OFFBOARDED}")
        print(f"    rounds that refused {OFFBOARDED}: {refused}", flush=True)
    with w.step("fedsilo status --watch saw the federation to its end"):
        watched = w.wait_exit("status", timeout_s=30)
        if "final evaluation" not in watched:
            raise StepError(f"status never showed the final evaluation: {_tail(watched)}")
    with w.step("coordinating centre: fedsilo ledger verify"):
        w.run(
            "centre",
            ["fedsilo", "ledger", "verify", "--federation", FEDERATION, "--exchange", exchange],
            centre,
            centre_admin,
        )
    with w.step("coordinating centre: fedsilo report runs -o report.html"):
        w.run("centre", ["fedsilo", "report", "runs", "-o", "report.html"], centre, centre_admin)
        if not (centre / "report.html").is_file():
            raise StepError("no report.html")
    with w.step("coordinating centre: fedsilo status runs"):
        shown = w.run("centre", ["fedsilo", "status", "runs"], centre, centre_admin)
        if "revoked" not in shown or "finished" not in shown:
            raise StepError(f"status does not show the revoked and finished hospitals: {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the run (default: a temp folder)")
    parser.add_argument("--rounds", type=int, default=3, help="training rounds (at least 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fedsilo-demo-aws-"))
    if work.exists() and any(work.iterdir()):
        print(f"✗ --work {work} is not empty; give a new folder", flush=True)
        return 2
    (work / "logs").mkdir(parents=True, exist_ok=True)
    print(f"walk-through in {work} (logs in {work / 'logs'})", flush=True)
    walkthrough = Walkthrough(work, max(2, args.rounds))
    # a TERM (a timeout, a CI cancel) unwinds like a failure: the processes are stopped below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    code = 0
    try:
        walk(walkthrough)
    except SystemExit as failed:
        code = int(failed.code or 1)
    finally:
        walkthrough.stop_all()
    seconds = time.monotonic() - walkthrough.started
    if code == 0:
        print(f"walk-through passed: {walkthrough.step_count} steps in {seconds:.0f} s", flush=True)
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"walk-through FAILED after {seconds:.0f} s; logs in {work / 'logs'}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
