"""`make demo`: run the example report into a local S3 bucket, the way a pod would.

Starts a real S3 server (SeaweedFS) on loopback, uploads examples/daily_report.ipynb, runs
`kubemill run` from S3 to an S3 run folder with parameters, then prints where the output is,
what the notebook recorded, and copies the rendered HTML next to you to open in a browser.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # appended: its operator/ must not shadow the stdlib

from tests.s3server import WRITER_KEY, start_s3  # noqa: E402

KUBEMILL = str(Path(sys.executable).with_name("kubemill"))
OUT = ROOT / "out" / "demo"


def main() -> int:
    import boto3

    work = Path(tempfile.mkdtemp(prefix="kubemill-demo-"))
    print(f"starting a local S3 server (SeaweedFS) in {work} ...", flush=True)
    s3 = start_s3(work)
    try:
        admin = boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
            region_name="us-east-1",
        )
        for bucket in ("notebooks", "results"):
            admin.create_bucket(Bucket=bucket)
        admin.upload_file(
            str(ROOT / "examples" / "daily_report.ipynb"), "notebooks", "daily_report.ipynb"
        )
        yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
        folder = f"s3://results/daily-report/{yesterday}/"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(s3.env())
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = WRITER_KEY  # not the admin
        summary = work / "summary.json"
        command = [
            KUBEMILL,
            "run",
            "s3://notebooks/daily_report.ipynb",
            folder,
            "-p",
            "report_date",
            yesterday,
            "-p",
            "region",
            "eu",
            "-p",
            "threshold",
            "0.95",
            "--html",
            "--termination-message-path",
            str(summary),
        ]
        print("$ " + " ".join(command[1:]), flush=True)
        code = subprocess.run(command, env=env, check=False).returncode

        OUT.mkdir(parents=True, exist_ok=True)
        listing = admin.list_objects_v2(Bucket="results", Prefix="daily-report/")
        for item in listing.get("Contents", []):
            admin.download_file("results", item["Key"], str(OUT / Path(item["Key"]).name))
        print()
        print(f"exit code      {code}")
        print(f"summary        {summary.read_text()}")
        print(f"output in S3   {folder}output.ipynb (+ results.json, run.json, output.html)")
        results = json.loads((OUT / "results.json").read_text())
        for name, value in results.items():
            print(f"  recorded     {name} = {json.dumps(value)}")
        print(f"copied to      {OUT}/ (open output.html in a browser)")
        print("the S3 server is stopped when the demo ends; its data was in " + str(work))
        return code
    finally:
        s3.stop()


if __name__ == "__main__":
    sys.exit(main())
