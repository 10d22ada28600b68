# Inputs of the credbroker module. The same knobs as the parameters of infra/sam/template.yaml.

variable "name" {
  description = "Name prefix of every resource (the SAM stack name's role): functions are <name>-token-exchange, the API <name>-api."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9-]{0,39}$", var.name))
    error_message = "name: a letter, then up to 39 letters, digits or dashes."
  }
}

# ------------------------------------------------------------------------------ artifacts

variable "token_exchange_zip" {
  description = "Path of the token-exchange package: a zip with `bootstrap` at its root (cargo lambda build --release --arm64 --output-format zip -p token-exchange)."
  type        = string
}

variable "db_credentials_zip" {
  description = "Path of the db-credentials package (cargo lambda build --release --arm64 --output-format zip -p db-credentials)."
  type        = string
}

variable "revoker_zip" {
  description = "Path of the revoker package (cargo lambda build --release --arm64 --output-format zip -p revoker)."
  type        = string
}

variable "config_layer_zip" {
  description = "Path of the configuration layer zip: credbroker/credbroker.toml and credbroker/policies/*.toml (docs/deploy.md, \"Terraform\")."
  type        = string
}

variable "architecture" {
  description = "Lambda architecture of the packages: arm64 or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture: arm64 or x86_64."
  }
}

# ------------------------------------------------------------------------------ broker

variable "public_url" {
  description = "The broker's public base URL: issuer of broker-signed tokens and base of its JWKS (a custom domain, or the api_url output)."
  type        = string

  validation {
    condition     = can(regex("^https?://[^\\s/]+(/\\S*)?$", var.public_url))
    error_message = "public_url: an http(s) URL."
  }
}

variable "workload_role_path" {
  description = "IAM path of the workload roles aws_role grants hand out, in this account: token-exchange may assume only roles under it, the revoker may write only their credbroker-revocations policy, and policies naming other roles are refused at load."
  type        = string
  default     = "/credbroker/"

  validation {
    condition     = can(regex("^/([\\w+=,.@-]+/)*$", var.workload_role_path))
    error_message = "workload_role_path: an IAM path such as /credbroker/ (starts and ends with /)."
  }
}

variable "workload_permissions_boundary_arn" {
  description = "Optional managed policy every workload role carries as its permissions boundary; when set, the revoker may edit only roles with it (iam:PermissionsBoundary)."
  type        = string
  default     = null
}

variable "signing_key_version" {
  description = "Bump to generate a new signing key (write-only secret value; never stored in state)."
  type        = number
  default     = 1
}

# ------------------------------------------------------------------------------ API

variable "stage_name" {
  description = "API Gateway stage name."
  type        = string
  default     = "api"
}

variable "endpoint_type" {
  description = "REGIONAL (public) or PRIVATE (only through vpc_endpoint_ids)."
  type        = string
  default     = "REGIONAL"

  validation {
    condition     = contains(["REGIONAL", "PRIVATE"], var.endpoint_type)
    error_message = "endpoint_type: REGIONAL or PRIVATE."
  }
}

variable "vpc_endpoint_ids" {
  description = "execute-api VPC endpoint ids allowed to call a PRIVATE API."
  type        = list(string)
  default     = []
}

variable "web_acl_arn" {
  description = "Optional AWS WAFv2 regional web ACL to attach to the stage."
  type        = string
  default     = null
}

variable "throttling_rate_limit" {
  description = "Stage-wide steady-state request rate (requests per second)."
  type        = number
  default     = 50
}

variable "throttling_burst_limit" {
  description = "Stage-wide burst limit (requests)."
  type        = number
  default     = 100
}

# ------------------------------------------------------------------------------ operations

variable "log_retention_days" {
  description = "Retention of function (audit) and API access logs, in days."
  type        = number
  default     = 365
}

variable "reserved_concurrency" {
  description = "Reserved concurrency per function; 0 = none reserved."
  type        = number
  default     = 0
}

variable "alarm_topic_arn" {
  description = "Optional SNS topic for alarm and OK notifications."
  type        = string
  default     = null
}

variable "table_kms_key_arn" {
  description = "Optional customer-managed KMS key for the lease table (default: the AWS managed key)."
  type        = string
  default     = null
}

variable "secrets_kms_key_arn" {
  description = "Optional customer-managed KMS key for the secrets (default: aws/secretsmanager)."
  type        = string
  default     = null
}

variable "logs_kms_key_arn" {
  description = "Optional KMS key for the log groups (its key policy must allow CloudWatch Logs)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}

# ------------------------------------------------------------------------------ revoker

variable "revoker_schedule" {
  description = "How often the revoker sweeps due leases (EventBridge schedule expression)."
  type        = string
  default     = "rate(1 minute)"
}

variable "orphan_schedule" {
  description = "How often the revoker reconciles orphaned backend credentials (input {\"task\":\"reconcile_orphans\"})."
  type        = string
  default     = "rate(1 hour)"
}

# ------------------------------------------------------------------------------ databases

variable "database_admin_secret_arns" {
  description = "Secrets Manager secret ARNs of the database admin passwords (password_secret_arn of each [databases.*]); db-credentials and the revoker may read exactly these. Empty: no secret access granted."
  type        = list(string)
  default     = []
}

variable "database_subnet_ids" {
  description = "Optional subnets for db-credentials and the revoker when the databases are in a VPC (they must also reach DynamoDB, STS, IAM, Secrets Manager: NAT or endpoints)."
  type        = list(string)
  default     = []
}

variable "database_security_group_ids" {
  description = "Security groups for the functions in database_subnet_ids (required with them)."
  type        = list(string)
  default     = []
}
