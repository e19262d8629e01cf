"""An agent step with Python requests: list the open issues of a repository.

Run it inside a task. credgate supplies the proxy, its CA and the GitHub
credential, so this script holds no token and sends none:

    credgate run --scope github-read -- python3 examples/agent.py

`credgate run` sets HTTPS_PROXY (with the task's token) and
REQUESTS_CA_BUNDLE, which requests reads; it ends the task, revoking the
credential, when the script exits, and exits with the script's code.

GITHUB_API_URL and GITHUB_REPOSITORY choose the API and the repository
(defaults: https://api.github.com and acme/app).
"""

import os
import sys

import requests


def main() -> int:
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    repo = os.environ.get("GITHUB_REPOSITORY", "acme/app")
    response = requests.get(
        f"{api}/repos/{repo}/issues",
        params={"state": "open", "per_page": 5},
        headers={"Accept": "application/vnd.github+json"},
        timeout=30,
    )
    if not response.ok:
        # A denial by credgate is a 403 whose body says which rule is missing.
        print(f"{response.status_code}: {response.text}", file=sys.stderr)
        return 1
    for issue in response.json():
        print(f"#{issue['number']} {issue['title']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
