# The smallest useful credbroker deployment: a public REST API, and one workload role the
# broker may hand out. Build the packages first (docs/deploy.md, "Terraform"):
#
#   for function in token-exchange db-credentials revoker; do
#     cargo lambda build --release --arm64 --output-format zip -p "$function"
#   done
#   make -f infra/sam/config-layer/Makefile build-ConfigLayer ARTIFACTS_DIR=$PWD/target/config-layer \
#     && (cd target/config-layer && zip -qr ../config-layer.zip credbroker)

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-central-1"
}

variable "name" {
  description = "Name prefix of the deployment."
  type        = string
  default     = "credbroker-dev"
}

variable "public_url" {
  description = "The broker's public URL (output api_url after a first apply, or your domain)."
  type        = string
}

variable "repo_root" {
  description = "Path of the credbroker checkout (where target/ holds the built packages)."
  type        = string
  default     = "../../../.."
}

module "credbroker" {
  source = "../../modules/credbroker"

  name               = var.name
  token_exchange_zip = "${var.repo_root}/target/lambda/token-exchange/bootstrap.zip"
  db_credentials_zip = "${var.repo_root}/target/lambda/db-credentials/bootstrap.zip"
  revoker_zip        = "${var.repo_root}/target/lambda/revoker/bootstrap.zip"
  config_layer_zip   = "${var.repo_root}/target/config-layer.zip"
  architecture       = "arm64"
  public_url         = var.public_url
  workload_role_path = "/credbroker/"
  log_retention_days = 365

  tags = {
    project     = "credbroker"
    environment = "dev"
  }
}

# A role that workloads receive through the broker: it trusts only the broker's function role,
# and only with the session tags and SourceIdentity the broker sets.
data "aws_iam_policy_document" "workload_trust" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
    principals {
      type        = "AWS"
      identifiers = [module.credbroker.token_exchange_role_arn]
    }
  }
}

resource "aws_iam_role" "workload" {
  name_prefix        = "${var.name}-workload-"
  path               = "/credbroker/"
  assume_role_policy = data.aws_iam_policy_document.workload_trust.json
}
