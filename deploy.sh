#!/usr/bin/env bash
# Deploy dermcam to Google Cloud: both functions (Cloud Functions gen2), a private heatmap
# bucket with a lifecycle rule, one least-privilege service account per function, Cloud
# Scheduler warmups, and the static page. Idempotent: a rerun updates what exists.
#
#   ./deploy.sh --project my-project [options]        (make deploy ARGS="--project ...")
#   ./deploy.sh --project my-project --dry-run         print every command, run none
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

PROJECT=""
REGION="europe-west1"
MODEL_DIR="$ROOT/model_store/models/demo/1"
MODEL=""
# Resolving --model (and exporting a published model the first time) needs the project's
# virtualenv, with TensorFlow: make venv.
PROJECT_PYTHON="${DERMCAM_PYTHON:-$ROOT/.venv/bin/python}"
BUCKET=""
PAGE_BUCKET=""
# The configurations the fit check recommends for the demo model (make fitcheck): the cheapest
# per request that fits with a 20 % margin, answers warm within 300 ms and starts cold within
# 3 s, measured at each configuration's own vCPU share. The default share of 128Mi (0.083
# vCPU) starts the demo in 8 s; 0.333 in 2 s, for ~30 % more per request. See
# bench/results.md. Any other model is deployed at what its own fit check recorded in its
# manifest (`fitcheck`: the exporter's, or make fitcheck MODEL=... ARGS=--record), unless the
# flags below say otherwise.
PREDICT_MEMORY="128Mi"
PREDICT_CPU="0.333"
GRADCAM_MEMORY="256Mi"
GRADCAM_CPU="0.333"
ORIGIN=""
ACCESS="public"
SCHEDULE="*/5 * * * *"
HEATMAP_DAYS=7
URL_TTL=900
MAX_INSTANCES=10
MIN_INSTANCES=0
CONCURRENCY=1
DRY_RUN=0
ENABLE_APIS=0
# Abuse bounds of a public deployment (docs/RELIABILITY.md, "Public deployments").
MONTHLY_BUDGET=""
RATE_LIMIT=""        # requests a minute per client address, per function and instance
APPCHECK=""          # the Firebase project NUMBER whose App Check tokens the functions require
APPCHECK_SITE_KEY="" # the page's reCAPTCHA Enterprise site key, registered with App Check
FIREBASE_APP_ID=""   # the page's Firebase web app (1:NUMBER:web:...)
FIREBASE_API_KEY=""  # its browser API key (public by design: it only names the project)
# Where App Check's REST API is: its key set for the functions, its token exchange for the
# page. Only a rehearsal points it elsewhere (make deploy-local: the local cloud's).
APPCHECK_ENDPOINT="${DERMCAM_APPCHECK_ENDPOINT:-https://firebaseappcheck.googleapis.com}"
APPCHECK_ENDPOINT="${APPCHECK_ENDPOINT%/}"
# Worst-case prices (USD; Cloud Run request-based billing, Tier 1 regions, no free tier),
# from cloud.google.com/run/pricing and /storage/pricing, 2026-12-07. Billing rounds each
# request up to 100 ms, so an instance bills at most 10 requests a second per concurrent slot.
PRICE_VCPU_S=0.000024
PRICE_GIB_S=0.0000025
PRICE_REQUEST=0.0000004
PRICE_OBJECT_WRITE=0.000005  # Class A operation: gradcam stores one heatmap per request
BUILD_DIR="${DERMCAM_BUILD_DIR:-$ROOT/build}"
RUNTIME="python312"
APIS=(cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com
      artifactregistry.googleapis.com cloudscheduler.googleapis.com storage.googleapis.com
      iam.googleapis.com iamcredentials.googleapis.com)

usage() {
  cat <<EOF
Usage: ./deploy.sh --project PROJECT [options]

  --project ID           Google Cloud project (required)
  --region REGION        region for functions, buckets and schedulers [$REGION]
  --model NAME           demo, demo-metadata, ham10000 (fetched by hash and exported once),
                         or a model directory; deployed at its recorded fit check
  --model-dir DIR        exported model directory [model_store/models/demo/1]
  --bucket NAME          private heatmap bucket [PROJECT-dermcam-heatmaps]
  --page-bucket NAME     public bucket for the static page, or 'none' [PROJECT-dermcam-page]
  --predict-memory SIZE  memory tier of predict, at most 512Mi [$PREDICT_MEMORY]
  --predict-cpu VCPU     vCPU of predict, 0.08 to 1 (fractions need --concurrency 1) [$PREDICT_CPU]
  --gradcam-memory SIZE  memory tier of gradcam, at most 512Mi [$GRADCAM_MEMORY]
  --gradcam-cpu VCPU     vCPU of gradcam [$GRADCAM_CPU]
  --origin URL           page origin allowed by CORS [https://storage.googleapis.com]
  --public | --private   who may call the functions [public: the page calls them]
  --schedule CRON        warmup schedule, or 'none' to skip schedulers [$SCHEDULE]
  --min-instances N      keep N instances warm instead of (or besides) warmup pings [$MIN_INSTANCES]
  --max-instances N      [$MAX_INSTANCES]
  --concurrency N        requests per instance; >1 needs a whole vCPU [$CONCURRENCY]
  --monthly-budget USD   set --max-instances from a monthly budget and print the worst
                         case per hour it allows (every instance busy all the time)
  --rate-limit N         requests a minute per client address, per function and instance
                         [public: 30; private: none]
  --appcheck NUMBER      require Firebase App Check tokens of this project number; the page
                         then needs the three below to obtain them
  --appcheck-site-key K  the page's reCAPTCHA Enterprise site key
  --firebase-app-id ID   the page's Firebase web app id
  --firebase-api-key K   the web app's API key
                         (DERMCAM_APPCHECK_ENDPOINT=URL: App Check's API elsewhere, a rehearsal)
  --heatmap-days N       delete heatmaps after N days [$HEATMAP_DAYS]
  --url-ttl SECONDS      lifetime of signed heatmap URLs [$URL_TTL]
  --enable-apis          enable missing Google APIs instead of stopping
  --dry-run              print every command that would run, run none
EOF
}

die() { echo "deploy.sh: $*" >&2; exit 1; }

# The model's recorded fit check → the configuration of each function the command line left
# unset: "MEMORY CPU" per function, or nothing when none was recorded.
recorded_configuration() {
  python3 - "$MODEL_DIR/manifest.json" <<'EOF'
import json, sys
manifest = json.load(open(sys.argv[1]))
fit = manifest.get("fitcheck") or {}
print("demo", "yes" if manifest.get("demo") else "no")
found = [(f, (fit.get(f) or {}).get("recommended")) for f in ("predict", "gradcam")]
for function, best in found:
    if best:
        print(function, f"{best['memory_mb']}Mi", f"{best['cpu']:g}")
if not any(best for _, best in found):
    print("none")
EOF
}

apply_fitcheck() {
  local function memory cpu demo=""
  if ! command -v python3 >/dev/null; then
    ! grep -q '"fitcheck"' "$MODEL_DIR/manifest.json" ||
      die "reading the model's recorded fit check needs python3"
    return 0  # nothing recorded: the configuration above
  fi
  while read -r function memory cpu; do
    case "$function" in
      demo) demo="$memory" ;;
      predict)
        [[ "$GIVEN" == *predict-memory* ]] || PREDICT_MEMORY="$memory"
        [[ "$GIVEN" == *predict-cpu* ]] || PREDICT_CPU="$cpu" ;;
      gradcam)
        [[ "$GIVEN" == *gradcam-memory* ]] || GRADCAM_MEMORY="$memory"
        [[ "$GIVEN" == *gradcam-cpu* ]] || GRADCAM_CPU="$cpu" ;;
      none)
        [[ "$demo" == yes || ( "$GIVEN" == *predict-memory* && "$GIVEN" == *gradcam-memory* ) ]] ||
          die "$MODEL_DIR has no recorded fit check, and the demo's configuration may not hold it: run
  make fitcheck MODEL=$MODEL_DIR ARGS=--record   (a couple of minutes)
or give --predict-memory/--predict-cpu and --gradcam-memory/--gradcam-cpu"
        return 0 ;;
    esac
  done < <(recorded_configuration)
  echo "configuration from the model's fit check: predict $PREDICT_MEMORY / $PREDICT_CPU vCPU, gradcam $GRADCAM_MEMORY / $GRADCAM_CPU vCPU"
}

GIVEN=""  # the configuration flags given on the command line
while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) PROJECT="$2"; shift 2 ;;
    --region) REGION="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --model-dir) MODEL_DIR="$2"; shift 2 ;;
    --bucket) BUCKET="$2"; shift 2 ;;
    --page-bucket) PAGE_BUCKET="$2"; shift 2 ;;
    --predict-memory) PREDICT_MEMORY="$2"; GIVEN+=" predict-memory"; shift 2 ;;
    --predict-cpu) PREDICT_CPU="$2"; GIVEN+=" predict-cpu"; shift 2 ;;
    --gradcam-memory) GRADCAM_MEMORY="$2"; GIVEN+=" gradcam-memory"; shift 2 ;;
    --gradcam-cpu) GRADCAM_CPU="$2"; GIVEN+=" gradcam-cpu"; shift 2 ;;
    --origin) ORIGIN="$2"; shift 2 ;;
    --public) ACCESS="public"; shift ;;
    --private) ACCESS="private"; shift ;;
    --schedule) SCHEDULE="$2"; shift 2 ;;
    --min-instances) MIN_INSTANCES="$2"; shift 2 ;;
    --max-instances) MAX_INSTANCES="$2"; GIVEN+=" max-instances"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    --heatmap-days) HEATMAP_DAYS="$2"; shift 2 ;;
    --monthly-budget) MONTHLY_BUDGET="$2"; shift 2 ;;
    --rate-limit) RATE_LIMIT="$2"; shift 2 ;;
    --appcheck) APPCHECK="$2"; shift 2 ;;
    --appcheck-site-key) APPCHECK_SITE_KEY="$2"; shift 2 ;;
    --firebase-app-id) FIREBASE_APP_ID="$2"; shift 2 ;;
    --firebase-api-key) FIREBASE_API_KEY="$2"; shift 2 ;;
    --url-ttl) URL_TTL="$2"; shift 2 ;;
    --enable-apis) ENABLE_APIS=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

[[ -n "$PROJECT" ]] || { usage >&2; die "--project is required"; }
BUCKET="${BUCKET:-$PROJECT-dermcam-heatmaps}"
PAGE_BUCKET="${PAGE_BUCKET:-$PROJECT-dermcam-page}"
ORIGIN="${ORIGIN:-https://storage.googleapis.com}"
if [[ -n "$MODEL" ]]; then
  [[ -x "$PROJECT_PYTHON" ]] ||
    die "--model needs the project's virtualenv ($PROJECT_PYTHON): run make venv, or use --model-dir"
  MODEL_DIR="$("$PROJECT_PYTHON" -m model_store.catalog "$MODEL")" ||
    die "model $MODEL is not available (the cause is above)"
fi
[[ -f "$MODEL_DIR/manifest.json" ]] || die "no manifest.json in $MODEL_DIR (export a model first)"
apply_fitcheck
for tier in "$PREDICT_MEMORY" "$GRADCAM_MEMORY"; do
  case "$tier" in
    128Mi|256Mi|512Mi) ;;
    *) die "memory tier $tier: dermcam stays at 512Mi or below (128Mi, 256Mi, 512Mi)" ;;
  esac
done
for cpu in "$PREDICT_CPU" "$GRADCAM_CPU"; do
  # Cloud Run: 0.08 to 1 vCPU in fractions, whole numbers up to 8 above; a fraction needs
  # concurrency 1.
  if [[ "$cpu" =~ ^0\.([0-9]+)$ ]]; then
    thousandths="${BASH_REMATCH[1]}000"
    (( 10#${thousandths:0:3} >= 80 )) ||
      die "vCPU $cpu: use 0.08 to 1 (fractions), or a whole number up to 8"
    [[ "$CONCURRENCY" == 1 ]] || die "vCPU $cpu is a fraction: Cloud Run then needs --concurrency 1"
  elif [[ ! "$cpu" =~ ^([1-8]|1\.0+)$ ]]; then
    die "vCPU $cpu: use 0.08 to 1 (fractions), or a whole number up to 8"
  fi
done
[[ "$HEATMAP_DAYS" =~ ^[0-9]+$ && "$HEATMAP_DAYS" -ge 1 ]] || die "--heatmap-days must be >= 1"
[[ "$MAX_INSTANCES" =~ ^[1-9][0-9]*$ ]] || die "--max-instances must be >= 1"
[[ -z "$APPCHECK" || "$APPCHECK" =~ ^[0-9]+$ ]] ||
  die "--appcheck takes the Firebase project NUMBER (digits), not its id"
if [[ -n "$APPCHECK" && "$ACCESS" == public ]]; then
  [[ -n "$APPCHECK_SITE_KEY" && -n "$FIREBASE_APP_ID" && -n "$FIREBASE_API_KEY" ]] ||
    die "--appcheck: the page needs --appcheck-site-key, --firebase-app-id and --firebase-api-key to obtain tokens"
fi
if [[ -z "$RATE_LIMIT" ]]; then
  if [[ "$ACCESS" == public ]]; then RATE_LIMIT=30; else RATE_LIMIT=0; fi
fi
[[ "$RATE_LIMIT" =~ ^[0-9]+$ ]] || die "--rate-limit must be a whole number (0: none)"

# instance_hour MEMORY CPU WRITES: the most one busy instance can cost an hour (USD).
instance_hour() {
  local gib
  case "$1" in 128Mi) gib=0.125 ;; 256Mi) gib=0.25 ;; *) gib=0.5 ;; esac
  awk -v cpu="$2" -v gib="$gib" -v writes="$3" -v slots="$CONCURRENCY" \
    -v pc="$PRICE_VCPU_S" -v pm="$PRICE_GIB_S" -v pr="$PRICE_REQUEST" -v pw="$PRICE_OBJECT_WRITE" \
    'BEGIN { printf "%.4f", 3600 * (cpu * pc + gib * pm) + 36000 * slots * (pr + writes * pw) }'
}

# The spending bound: max-instances from --monthly-budget (unless given), and the worst case.
spending_bound() {
  local predict gradcam pair hourly
  predict="$(instance_hour "$PREDICT_MEMORY" "$PREDICT_CPU" 0)"
  gradcam="$(instance_hour "$GRADCAM_MEMORY" "$GRADCAM_CPU" 1)"
  pair="$(awk -v a="$predict" -v b="$gradcam" 'BEGIN { printf "%.4f", a + b }')"
  if [[ -n "$MONTHLY_BUDGET" ]]; then
    [[ "$MONTHLY_BUDGET" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--monthly-budget is in USD: e.g. 50"
    local allowed
    allowed="$(awk -v b="$MONTHLY_BUDGET" -v p="$pair" 'BEGIN { printf "%d", b / (730 * p) }')"
    (( allowed >= 1 )) || die "a budget of \$$MONTHLY_BUDGET a month cannot keep one busy instance of each function (\$$pair an hour, \$$(awk -v p="$pair" 'BEGIN { printf "%.0f", 730 * p }') a month): raise it, or lower the tiers"
    if [[ "$GIVEN" == *max-instances* ]]; then
      (( MAX_INSTANCES <= allowed )) ||
        echo "warning: --max-instances $MAX_INSTANCES is past what \$$MONTHLY_BUDGET a month allows ($allowed)"
    else
      MAX_INSTANCES="$allowed"
    fi
  fi
  hourly="$(awk -v p="$pair" -v n="$MAX_INSTANCES" 'BEGIN { printf "%.2f", p * n }')"
  echo "spending bound: at most $MAX_INSTANCES instances of each function; worst case \$$hourly an hour" \
    "(predict \$$predict, gradcam \$$gradcam per busy instance-hour, heatmap writes included)"
  if (( RATE_LIMIT > 0 )); then
    echo "rate limit: $RATE_LIMIT requests a minute per client address and instance:" \
      "one client gets at most $(( RATE_LIMIT * MAX_INSTANCES )) a minute from each function," \
      "sustained ($(( 2 * RATE_LIMIT * MAX_INSTANCES )) in one minute with each instance's burst)"
  fi
}

PREDICT_SA="dermcam-predict@$PROJECT.iam.gserviceaccount.com"
GRADCAM_SA="dermcam-gradcam@$PROJECT.iam.gserviceaccount.com"
SCHEDULER_SA="dermcam-scheduler@$PROJECT.iam.gserviceaccount.com"

# run CMD...: print it; run it unless --dry-run.
run() {
  printf '+ %s\n' "$(printf '%q ' "$@")"
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

# exists CMD...: whether a describe call succeeds (quietly). In a dry run nothing exists.
exists() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '+ %s  # (dry run: assumed missing)\n' "$(printf '%q ' "$@")"
    return 1
  fi
  "$@" >/dev/null 2>&1
}

preflight() {
  command -v gcloud >/dev/null || die "gcloud is not installed: https://cloud.google.com/sdk/docs/install"
  local account
  account="$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null || true)"
  [[ -n "$account" ]] || die "gcloud is not logged in: run 'gcloud auth login'"
  local enabled missing=()
  enabled="$(gcloud services list --enabled --project "$PROJECT" --format='value(config.name)')" \
    || die "cannot list the APIs of project $PROJECT (does it exist, may $account use it?)"
  for api in "${APIS[@]}"; do
    grep -qx "$api" <<<"$enabled" || missing+=("$api")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ "$ENABLE_APIS" == 1 ]]; then
      run gcloud services enable "${missing[@]}" --project "$PROJECT"
    else
      die "required APIs are disabled: ${missing[*]}. Enable them with:
  gcloud services enable ${missing[*]} --project $PROJECT
or rerun with --enable-apis."
    fi
  fi
  echo "deploying as $account to $PROJECT ($REGION)"
}

# stage NAME ARTIFACT: a folder Cloud Functions can build as it is.
stage() {
  local name="$1" artifact="$2" dir="$BUILD_DIR/$1"
  echo "staging $dir"
  rm -rf "$dir"
  mkdir -p "$dir/model"
  cp "$ROOT/functions/$name/main.py" "$ROOT/functions/$name/requirements.txt" "$dir/"
  # The core package without the Keras modules (reference engine, loaders, replay):
  # TensorFlow never runs in a function.
  cp -r "$ROOT/shared/dermcam" "$dir/dermcam"
  rm -rf "$dir"/dermcam/keras_*.py "$dir/dermcam/__pycache__"
  cp "$MODEL_DIR/manifest.json" "$MODEL_DIR/$artifact.tflite" "$dir/model/"
  # The file the trust block names (the out-of-scope rule's reference features, hash-checked
  # by the function): without it a calibrated manifest cannot be read.
  local reference
  reference="$(python3 -c 'import json, sys
trust = json.load(open(sys.argv[1])).get("trust") or {}
print((trust.get("scope") or {}).get("reference", ""))' "$MODEL_DIR/manifest.json")"
  if [[ -n "$reference" ]]; then cp "$MODEL_DIR/$reference" "$dir/model/"; fi
}

ensure_service_account() {
  local id="$1" email="$1@$PROJECT.iam.gserviceaccount.com"
  exists gcloud iam service-accounts describe "$email" --project "$PROJECT" ||
    run gcloud iam service-accounts create "$id" --project "$PROJECT" \
      --display-name "dermcam $id"
}

ensure_bucket() {
  local tmp
  tmp="$(mktemp -d)"
  cat >"$tmp/lifecycle.json" <<EOF
{"rule": [{"action": {"type": "Delete"}, "condition": {"age": $HEATMAP_DAYS, "matchesPrefix": ["heatmaps/"]}}]}
EOF
  cat >"$tmp/cors.json" <<EOF
[{"origin": ["$ORIGIN"], "method": ["GET"], "responseHeader": ["Content-Type"], "maxAgeSeconds": 3600}]
EOF
  if ! exists gcloud storage buckets describe "gs://$BUCKET" --project "$PROJECT"; then
    run gcloud storage buckets create "gs://$BUCKET" --project "$PROJECT" --location "$REGION" \
      --uniform-bucket-level-access --public-access-prevention
  fi
  # Applied on every run, so a rerun repairs drift: private, uniform, lifecycle, page CORS.
  run gcloud storage buckets update "gs://$BUCKET" --project "$PROJECT" \
    --uniform-bucket-level-access --public-access-prevention \
    --lifecycle-file "$tmp/lifecycle.json" --cors-file "$tmp/cors.json"
  rm -rf "$tmp"
}

grant_identities() {
  ensure_service_account dermcam-predict   # predict: no storage access at all
  ensure_service_account dermcam-gradcam
  run gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --project "$PROJECT" \
    --member "serviceAccount:$GRADCAM_SA" --role roles/storage.objectCreator
  run gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --project "$PROJECT" \
    --member "serviceAccount:$GRADCAM_SA" --role roles/storage.objectViewer
  # V4 signing without a key file goes through IAM signBlob on the function's own account.
  run gcloud iam service-accounts add-iam-policy-binding "$GRADCAM_SA" --project "$PROJECT" \
    --member "serviceAccount:$GRADCAM_SA" --role roles/iam.serviceAccountTokenCreator
}

deploy_function() {
  local name="$1" memory="$2" cpu="$3" account="$4" env="$5" access_flag
  if [[ "$ACCESS" == public ]]; then access_flag="--allow-unauthenticated"
  else access_flag="--no-allow-unauthenticated"; fi
  run gcloud functions deploy "dermcam-$name" --gen2 --project "$PROJECT" --region "$REGION" \
    --runtime "$RUNTIME" --source "$BUILD_DIR/$name" --entry-point "$name" --trigger-http \
    "$access_flag" --memory "$memory" --cpu "$cpu" --concurrency "$CONCURRENCY" \
    --max-instances "$MAX_INSTANCES" --min-instances "$MIN_INSTANCES" \
    --service-account "$account" --set-env-vars "^##^$env"
}

# Both functions are built and deployed side by side (a gen2 build takes a minute or more
# each); each one's output is kept and printed whole once it is done, so the two never
# interleave. Either failing fails the run, after both have ended.
deploy_functions() {
  local common="$1" logs failed=()
  logs="$(mktemp -d)"
  echo "deploying dermcam-predict and dermcam-gradcam side by side (each one's output follows when it is done)"
  deploy_function predict "$PREDICT_MEMORY" "$PREDICT_CPU" "$PREDICT_SA" "$common" \
    >"$logs/predict.out" 2>"$logs/predict.err" &
  local predict=$!
  deploy_function gradcam "$GRADCAM_MEMORY" "$GRADCAM_CPU" "$GRADCAM_SA" \
    "$common##DERMCAM_BUCKET=$BUCKET##DERMCAM_SIGNED_URL_TTL=$URL_TTL" \
    >"$logs/gradcam.out" 2>"$logs/gradcam.err" &
  local gradcam=$!
  wait "$predict" || failed+=(dermcam-predict)
  cat "$logs/predict.out" && cat "$logs/predict.err" >&2
  wait "$gradcam" || failed+=(dermcam-gradcam)
  cat "$logs/gradcam.out" && cat "$logs/gradcam.err" >&2
  rm -rf "$logs"
  if ((${#failed[@]})); then
    echo "error: ${failed[*]} failed to deploy (gcloud's output above says why)" >&2
    exit 1
  fi
}

function_url() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '+ gcloud functions describe dermcam-%s ...  # (dry run)\n' "$1" >&2
    echo "https://dermcam-$1.example.invalid"
    return
  fi
  gcloud functions describe "dermcam-$1" --gen2 --project "$PROJECT" --region "$REGION" \
    --format='value(serviceConfig.uri)'
}

schedule_warmup() {
  local name="$1" url="$2" job="dermcam-$1-warmup" verb=create auth=()
  if [[ "$ACCESS" == private ]]; then
    auth=(--oidc-service-account-email "$SCHEDULER_SA" --oidc-token-audience "$url")
  fi
  exists gcloud scheduler jobs describe "$job" --project "$PROJECT" --location "$REGION" && verb=update
  run gcloud scheduler jobs "$verb" http "$job" --project "$PROJECT" --location "$REGION" \
    --schedule "$SCHEDULE" --uri "$url?warmup=1" --http-method GET \
    --attempt-deadline 60s "${auth[@]}"
}

# The page's config.js: the function URLs, and where it obtains App Check tokens.
page_config() {
  local appcheck=""
  if [[ -n "$APPCHECK" ]]; then
    appcheck=", \"appCheck\": {\"projectNumber\": \"$APPCHECK\", \"appId\": \"$FIREBASE_APP_ID\", \"apiKey\": \"$FIREBASE_API_KEY\", \"siteKey\": \"$APPCHECK_SITE_KEY\", \"exchangeUrl\": \"$APPCHECK_ENDPOINT\"}"
  fi
  printf 'window.DERMCAM_CONFIG = {"predictUrl": "%s", "gradcamUrl": "%s"%s};\n' "$1" "$2" "$appcheck"
}

publish_page() {
  local predict_url="$1" gradcam_url="$2" tmp
  if [[ "$ACCESS" == private ]]; then
    # A browser has no identity token for the functions: a page would only get 403s.
    echo "page not published: --private functions answer only callers with an ID token" \
      "(the scheduler, your backend, or the page behind your own authenticating proxy)"
    return
  fi
  if [[ "$PAGE_BUCKET" == none ]]; then
    echo "page: serve frontend/ from any static host with this config.js:"
    page_config "$predict_url" "$gradcam_url"
    return
  fi
  tmp="$(mktemp -d)"
  cp -r "$ROOT/frontend/." "$tmp/"
  page_config "$predict_url" "$gradcam_url" >"$tmp/config.js"
  if ! exists gcloud storage buckets describe "gs://$PAGE_BUCKET" --project "$PROJECT"; then
    run gcloud storage buckets create "gs://$PAGE_BUCKET" --project "$PROJECT" \
      --location "$REGION" --uniform-bucket-level-access
  fi
  run gcloud storage buckets update "gs://$PAGE_BUCKET" --project "$PROJECT" \
    --web-main-page-suffix index.html
  # The page bucket holds only the static page (no patient data); it is public by design.
  run gcloud storage buckets add-iam-policy-binding "gs://$PAGE_BUCKET" --project "$PROJECT" \
    --member allUsers --role roles/storage.objectViewer
  run gcloud storage cp --recursive --cache-control "no-cache" "$tmp/*" "gs://$PAGE_BUCKET/"
  rm -rf "$tmp"
  echo "page: https://storage.googleapis.com/$PAGE_BUCKET/index.html"
}

main() {
  if [[ "$DRY_RUN" == 1 ]]; then echo "dry run: nothing below is executed"; else preflight; fi
  spending_bound
  stage predict predict
  stage gradcam gradcam
  ensure_bucket
  grant_identities
  # The staged model sits beside the package (build/<name>/model): the default model dir.
  # THREADS: gunicorn threads of functions-framework, one per concurrent request allowed.
  local common="DERMCAM_ALLOWED_ORIGINS=$ORIGIN##DERMCAM_NUM_THREADS=1##THREADS=$CONCURRENCY"
  common+="##DERMCAM_RATE_LIMIT_PER_MINUTE=$RATE_LIMIT"
  [[ -z "$APPCHECK" ]] ||
    common+="##DERMCAM_APPCHECK_PROJECT_NUMBER=$APPCHECK##DERMCAM_APPCHECK_JWKS_URL=$APPCHECK_ENDPOINT/v1/jwks"
  deploy_functions "$common"
  local predict_url gradcam_url
  predict_url="$(function_url predict)"
  gradcam_url="$(function_url gradcam)"
  if [[ "$SCHEDULE" != none ]]; then
    if [[ "$ACCESS" == private ]]; then
      ensure_service_account dermcam-scheduler
      for name in predict gradcam; do
        run gcloud functions add-invoker-policy-binding "dermcam-$name" --project "$PROJECT" \
          --region "$REGION" --member "serviceAccount:$SCHEDULER_SA"
      done
    fi
    schedule_warmup predict "$predict_url"
    schedule_warmup gradcam "$gradcam_url"
  else
    echo "no warmup schedule: set --min-instances 1 to keep an instance warm instead"
  fi
  publish_page "$predict_url" "$gradcam_url"
  echo "predict: $predict_url"
  echo "gradcam: $gradcam_url"
}

main
