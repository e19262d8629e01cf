#!/usr/bin/env bash
# An agent step with curl: list the open issues of a repository.
#
# Run it inside a task. credgate supplies the proxy, its CA and the GitHub
# credential, so this script holds no token and sends none:
#
#   credgate run --scope github-read -- bash examples/curl.sh
#
# `credgate run` sets HTTPS_PROXY (with the task's token) and CURL_CA_BUNDLE,
# which curl reads; it ends the task, revoking the credential, when the
# script exits, and exits with the script's code.
#
# GITHUB_API_URL and GITHUB_REPOSITORY choose the API and the repository
# (defaults: https://api.github.com and acme/app).
set -euo pipefail

api="${GITHUB_API_URL:-https://api.github.com}"
repo="${GITHUB_REPOSITORY:-acme/app}"

# --fail-with-body: when credgate denies the request (403), its reason is
# printed and the step fails instead of carrying on with an error page.
curl -sS --fail-with-body --max-time 30 \
  -H "Accept: application/vnd.github+json" \
  "$api/repos/$repo/issues?state=open&per_page=5"
echo
