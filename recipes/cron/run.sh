#!/bin/sh
# A nightly send from cron, e.g. `0 6 * * *  /data/digest/run.sh` in the crontab of the user who owns
# /data/digest. It runs as cron runs it (`env -i PATH=/usr/bin:/bin`): no profile, no venv, no
# credentials in the environment. So it names the command by its absolute path, makes its own
# directories, and reads the app's credentials from a file only its owner can read.
set -u

# -- what to set, once -----------------------------------------------------------------------------
DISPATCHER=/opt/dispatcher/bin/dispatcher   # the command: `pipx install` puts it in ~/.local/bin
HERE=$(cd "$(dirname "$0")" && pwd)        # this directory: the jobs, the credentials, the outcomes
JOBS="$HERE/digest.jsonl"                  # the data team's export lands here each morning
CREDENTIALS="$HERE/credentials.env"        # TIM_SDKAPPID=..., TIM_IDENTIFIER=..., TIM_SECRET_KEY=...

# -- the run ---------------------------------------------------------------------------------------
day=$(date +%F)
mkdir -p "$HERE/outcomes" "$HERE/logs" || exit 2
log="$HERE/logs/$day.log"
if [ ! -r "$CREDENTIALS" ]; then
    echo "run.sh: cannot read $CREDENTIALS" >>"$log"
    exit 2
fi
case $(ls -l "$CREDENTIALS") in
    -???------*) ;;
    *) echo "run.sh: $CREDENTIALS is readable by others: chmod 600 it" >>"$log"; exit 2 ;;
esac
set -a                 # export what the file sets: the credentials reach dispatcher, never its argv
. "$CREDENTIALS"
set +a

# --resume: a run that crashed or was stopped earlier today is finished, never sent again; the first
# run of the day starts a new journal (with a warning line).
"$DISPATCHER" send "$JOBS" --resume --out "$HERE/outcomes/$day.jsonl" --no-progress --log-format json \
    --summary-json "$HERE/outcomes/$day.summary.json" 2>>"$log"
status=$?
"$DISPATCHER" report "$HERE/outcomes/$day.jsonl" --json >"$HERE/outcomes/$day.report.json" 2>>"$log"
exit $status   # 0 all delivered, 1 some failed or rejected, 2 configuration, 130 interrupted
