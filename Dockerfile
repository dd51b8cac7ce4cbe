# ecr-operator container image: the operator process only (no test world, no Go binaries).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
# No shell tools are needed at run time; the operator talks to the API server, AWS and registries only.
COPY --from=build /install /usr/local
USER 65532:65532
ENV ECR_OPERATOR_LOG_FORMAT=json \
    ECR_OPERATOR_BIND_ADDRESS=0.0.0.0 \
    PYTHONUNBUFFERED=1
EXPOSE 8080 8081
ENTRYPOINT ["ecr-operator"]
CMD ["run"]
