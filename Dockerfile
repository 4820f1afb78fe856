# The app's CPU image: head, ingress ("media") and CPU detector nodes.
#   docker build -t ghcr.io/example/rayrtc:0.1.0 .
# Base: Ray 2.60 on Python 3.11, the versions pyproject.toml pins and CI tests. The exact
# tag was not pulled when this file was written (no registry reachable there): check
# it exists (docker manifest inspect) and keep it equal to rayVersion in rayservice.yaml.
FROM rayproject/ray:2.60.0-py311

WORKDIR /home/ray/rayrtc
# Only what the package needs (pyproject reads README.md as its long description).
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users component ./component
COPY --chown=ray:users deployments ./deployments
COPY --chown=ray:users serve_app ./serve_app
# The project as CI installs it (same resolver, same pins), minus the test extras.
RUN pip install --no-cache-dir .
# Fail the build, not the deploy, when the app cannot be imported.
RUN python -c "import serve_app; serve_app.AppArgs(); print('rayrtc importable')"
