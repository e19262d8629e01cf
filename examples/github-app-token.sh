#!/usr/bin/env bash
# Mints a GitHub App installation token for one credgate task.
#
# credgate's `exec` credential source runs this when a task first needs the
# credential (and again before the token expires), injects the token into
# the task's requests and revokes nothing it cannot: an installation token
# dies on its own within the hour. The agent never sees it. The token is
# narrowed to the repositories and permissions given here, so not even
# credgate holds more than the tasks need.
#
# Usage, as the command of an exec credential (see credgate.github.yaml):
#
#   github-app-token.sh --app-id ID --installation-id ID --private-key PEM
#                       [--repositories app,docs]
#                       [--permissions issues:write,contents:read]
#                       [--api https://api.github.com]
#
# Prints {"token": "...", "expires_at": "..."} on stdout and nothing else;
# credgate refuses any other output. Needs bash, openssl, curl and jq on
# credgate's PATH. credgate runs it with an empty environment apart from
# PATH, HOME, CREDGATE_TASK_ID, CREDGATE_AGENT and CREDGATE_CREDENTIAL.
set -euo pipefail

api=https://api.github.com
app_id= installation_id= private_key= repositories= permissions=
while [ $# -gt 0 ]; do
  case "$1" in
    --app-id) app_id=$2 ;;
    --installation-id) installation_id=$2 ;;
    --private-key) private_key=$2 ;;
    --repositories) repositories=$2 ;;
    --permissions) permissions=$2 ;;
    --api) api=$2 ;;
    *) echo "github-app-token: unknown argument $1" >&2; exit 2 ;;
  esac
  shift 2
done
if [ -z "$app_id" ] || [ -z "$installation_id" ] || [ -z "$private_key" ]; then
  echo "github-app-token: --app-id, --installation-id and --private-key are required" >&2
  exit 2
fi

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# The App's JWT: valid for ten minutes at most, backdated a minute for clock skew.
now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
claims=$(printf '{"iat":%d,"exp":%d,"iss":"%s"}' $((now - 60)) $((now + 540)) "$app_id" | b64url)
signature=$(printf '%s.%s' "$header" "$claims" |
  openssl dgst -sha256 -sign "$private_key" -binary | b64url)
jwt="$header.$claims.$signature"

# What the token may do: only these repositories, only these permissions.
body=$(jq -cn --arg repos "$repositories" --arg perms "$permissions" '
  (if $repos == "" then {} else {repositories: ($repos | split(","))} end)
  + (if $perms == "" then {} else
       {permissions: ($perms | split(",") | map(split(":") | {(.[0]): .[1]}) | add)}
     end)')

# The JWT reaches curl through its config on stdin, not its command line,
# where other users of the host could read it.
if ! response=$(printf 'header = "Authorization: Bearer %s"\n' "$jwt" |
  curl -sS --fail --max-time 10 --config - \
    -X POST \
    -H "Accept: application/vnd.github+json" \
    -H "X-GitHub-Api-Version: 2022-11-28" \
    --data "$body" \
    "$api/app/installations/$installation_id/access_tokens"); then
  echo "github-app-token: GitHub refused to mint a token for installation $installation_id" >&2
  exit 1
fi
jq -c '{token, expires_at}' <<<"$response"
