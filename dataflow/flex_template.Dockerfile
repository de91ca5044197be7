# Flex Template image: the GPU worker image (dataflow/Dockerfile) plus Dataflow's Python template launcher, so the
# launcher VM builds the job graph with exactly the code and pins the workers run (apache-beam 2.77.0, setup.py's
# pin: the job is submitted by the same Beam SDK that the workers' boot and SDK harness run). Build it after the
# worker image, from the repository root:
#   docker build -f dataflow/flex_template.Dockerfile --build-arg WORKER_IMAGE=$WORKER_IMAGE -t $FLEX_IMAGE .
# then `gcloud dataflow flex-template build` with dataflow/metadata.json (docs/dataflow.md).
ARG WORKER_IMAGE
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest
FROM ${LAUNCHER_IMAGE} AS launcher

FROM ${WORKER_IMAGE}
ARG WORKER_IMAGE
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher
# The launcher runs this program with the template's parameters as --name=value flags (and Dataflow's own:
# --runner, --project, --region, --temp_location, --template_location, ...).
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/elmo/dataflow/main.py
# pipeline/dataflow.py defaults read by that program: the workers run the worker image, whose installed code is
# this image's code, so no sdist is shipped (no --setup_file); --model may point into the baked-in models/.
ENV ELMO_DATAFLOW_IMAGE=${WORKER_IMAGE} \
    ELMO_DATAFLOW_SETUP_FILE=none \
    ELMO_DATAFLOW_LOCAL_MODELS=/opt/elmo/models
# The worker image's ENTRYPOINT (Beam's boot) stays: Dataflow starts the launcher binary itself.
