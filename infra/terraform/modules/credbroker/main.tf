# credbroker: the resources of infra/sam/template.yaml, from prebuilt packages.
# Sections (same order as the SAM template): lease table, signing key, configuration layer,
# REST API, one block per function (role, log group, function, permissions, alarms).

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region
  account_id = data.aws_caller_identity.current.account_id

  token_exchange_name = "${var.name}-token-exchange"
  db_credentials_name = "${var.name}-db-credentials"
  revoker_name        = "${var.name}-revoker"
  has_db_secrets      = length(var.database_admin_secret_arns) > 0
  in_database_vpc     = length(var.database_subnet_ids) > 0
  has_secrets_key     = var.secrets_kms_key_arn != null && var.secrets_kms_key_arn != ""
  has_alarm_topic     = var.alarm_topic_arn != null && var.alarm_topic_arn != ""
  alarm_actions       = local.has_alarm_topic ? [var.alarm_topic_arn] : []

  # The workload roles: the only ones token-exchange may assume and the revoker may edit,
  # under workload_role_path in this account (policies naming others are refused at load).
  workload_role_prefix = "arn:${local.partition}:iam::${local.account_id}:role${var.workload_role_path}"
  has_boundary         = var.workload_permissions_boundary_arn != null && var.workload_permissions_boundary_arn != ""

  # Environment of the HTTP functions (the SAM template sets the same). Only token-exchange
  # gets the signing key; the revoker's is smaller: no policies, no public URL.
  http_environment = {
    AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH = "true"
    CREDBROKER_TABLE                     = aws_dynamodb_table.leases.name
    CREDBROKER_PUBLIC_URL                = var.public_url
    CREDBROKER_CONFIG                    = "/opt/credbroker/credbroker.toml"
    CREDBROKER_POLICY_DIR                = "/opt/credbroker/policies"
    CREDBROKER_WORKLOAD_ROLE_ARN_PREFIX  = local.workload_role_prefix
  }
  token_exchange_environment = merge(local.http_environment, {
    # AWSCURRENT signs, AWSPREVIOUS stays in the JWKS (read at init).
    CREDBROKER_SIGNING_KEY_SECRET_ARN = aws_secretsmanager_secret.signing_key.arn
  })
  revoker_environment = {
    CREDBROKER_TABLE  = aws_dynamodb_table.leases.name
    CREDBROKER_CONFIG = "/opt/credbroker/credbroker.toml"
  }

  # Routes of the REST API, per function ("METHOD path"), then "METHOD path" => invoke ARN.
  token_exchange_routes = [
    "POST /v1/token",
    "GET /v1/health",
    "GET /.well-known/jwks.json",
    "GET /.well-known/openid-configuration",
    # The lease API (docs/leases.md); revocations it cannot do itself go to the revoker.
    "GET /v1/leases/{id}",
    "DELETE /v1/leases/{id}",
    "POST /v1/leases/revoke",
    "POST /v1/admin/aws-role-cutoff",
  ]
  db_credentials_routes = [
    "POST /v1/db/{policy}/{grant}/credentials",
    # Only db-credentials can extend a database user; no other lease can be renewed.
    "POST /v1/leases/{id}/renew",
  ]
  routes = merge(
    { for r in local.token_exchange_routes : r => aws_lambda_function.token_exchange.invoke_arn },
    { for r in local.db_credentials_routes : r => aws_lambda_function.db_credentials.invoke_arn },
  )
  openapi = {
    openapi = "3.0.1"
    info    = { title = "${var.name}-api", version = "1" }
    paths = {
      for path in distinct([for r in keys(local.routes) : split(" ", r)[1]]) : path => {
        for r, uri in local.routes : lower(split(" ", r)[0]) => {
          x-amazon-apigateway-integration = {
            type                 = "aws_proxy"
            httpMethod           = "POST"
            uri                  = uri
            payloadFormatVersion = "1.0"
          }
        } if split(" ", r)[1] == path
      }
    }
  }
}

# ==================================================================== Lease table
# Exactly the layout shared/src/store/dynamodb.rs documents. Deletion protection on: it holds
# what the revoker needs to end outstanding credentials (turn it off to destroy).
resource "aws_dynamodb_table" "leases" {
  name                        = "${var.name}-leases"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  deletion_protection_enabled = true

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "due_pk"
    type = "S"
  }
  attribute {
    name = "due_at"
    type = "N"
  }
  attribute {
    name = "holder"
    type = "S"
  }
  attribute {
    name = "created_sk"
    type = "S"
  }

  global_secondary_index {
    name            = "due"
    hash_key        = "due_pk"
    range_key       = "due_at"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "identity"
    hash_key        = "holder"
    range_key       = "created_sk"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }
  point_in_time_recovery {
    enabled = true
  }
  server_side_encryption {
    enabled     = true
    kms_key_arn = var.table_kms_key_arn
  }

  tags = var.tags
}

# ==================================================================== Signing key
# {"format":"ed25519-seed-hex","seed":"<64 hex chars>"}: the 32-byte Ed25519 seed, generated at
# apply time and written write-only (never in state or plans). The functions read AWSCURRENT
# (signs) and AWSPREVIOUS (stays in the JWKS) at init.
resource "aws_secretsmanager_secret" "signing_key" {
  #checkov:skip=CKV2_AWS_57:No rotation function: bump signing_key_version to rotate (the previous version stays in the JWKS as AWSPREVIOUS), docs/deploy.md.
  name_prefix = "${var.name}-signing-key-"
  description = "credbroker ${var.name} token signing key (Ed25519 seed)"
  kms_key_id  = var.secrets_kms_key_arn
  tags        = var.tags
}

ephemeral "random_password" "signing_seed" {
  length  = 64
  special = false
}

resource "aws_secretsmanager_secret_version" "signing_key" {
  secret_id = aws_secretsmanager_secret.signing_key.id
  secret_string_wo = jsonencode({
    format = "ed25519-seed-hex"
    seed   = sha256(ephemeral.random_password.signing_seed.result)
  })
  secret_string_wo_version = var.signing_key_version
}

# ==================================================================== Configuration layer
resource "aws_lambda_layer_version" "config" {
  layer_name               = "${var.name}-config"
  description              = "credbroker configuration and policies (/opt/credbroker)"
  filename                 = var.config_layer_zip
  source_code_hash         = filebase64sha256(var.config_layer_zip)
  compatible_runtimes      = ["provided.al2023"]
  compatible_architectures = [var.architecture]
}

# ==================================================================== REST API
resource "aws_api_gateway_rest_api" "api" {
  name        = "${var.name}-api"
  description = "credbroker token exchange, key discovery, lease API, database credentials"
  body        = jsonencode(local.openapi)

  endpoint_configuration {
    types            = [var.endpoint_type]
    vpc_endpoint_ids = var.endpoint_type == "PRIVATE" ? var.vpc_endpoint_ids : null
  }

  # A PRIVATE API answers only calls through the listed VPC endpoints.
  policy = var.endpoint_type != "PRIVATE" ? null : jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect    = "Allow"
        Principal = "*"
        Action    = "execute-api:Invoke"
        Resource  = "execute-api:/*"
      },
      {
        Effect    = "Deny"
        Principal = "*"
        Action    = "execute-api:Invoke"
        Resource  = "execute-api:/*"
        Condition = { StringNotEquals = { "aws:SourceVpce" = var.vpc_endpoint_ids } }
      },
    ]
  })

  lifecycle {
    create_before_destroy = true
    precondition {
      condition     = var.endpoint_type != "PRIVATE" || length(var.vpc_endpoint_ids) > 0
      error_message = "endpoint_type PRIVATE needs at least one vpc_endpoint_ids entry."
    }
  }

  tags = var.tags
}

resource "aws_api_gateway_deployment" "api" {
  rest_api_id = aws_api_gateway_rest_api.api.id
  triggers = {
    redeployment = sha1(jsonencode([aws_api_gateway_rest_api.api.body, aws_api_gateway_rest_api.api.policy]))
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_cloudwatch_log_group" "api_access" {
  name              = "/credbroker/${var.name}/api-access"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "aws_api_gateway_stage" "api" {
  #checkov:skip=CKV_AWS_120:Responses carry credentials; they must never be cached.
  #checkov:skip=CKV2_AWS_29:WAF is optional (web_acl_arn); PRIVATE endpoints or an upstream WAF are alternatives.
  #checkov:skip=CKV2_AWS_51:Client certificates authenticate API Gateway to a backend over HTTP; the backend here is Lambda.
  #checkov:skip=CKV2_AWS_77:The web ACL is the operator's (web_acl_arn); its rule sets (e.g. the AMR Log4j set) are chosen there.
  #checkov:skip=CKV2_AWS_4:Execution logging is off on purpose (aws_api_gateway_method_settings.all): it needs the account-wide logging role and can carry tokens; access logs record every call.
  rest_api_id          = aws_api_gateway_rest_api.api.id
  deployment_id        = aws_api_gateway_deployment.api.id
  stage_name           = var.stage_name
  xray_tracing_enabled = true

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId          = "$context.requestId"
      extendedRequestId  = "$context.extendedRequestId"
      sourceIp           = "$context.identity.sourceIp"
      userAgent          = "$context.identity.userAgent"
      vpceId             = "$context.identity.vpceId"
      requestTime        = "$context.requestTime"
      httpMethod         = "$context.httpMethod"
      resourcePath       = "$context.resourcePath"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      responseLatency    = "$context.responseLatency"
      integrationStatus  = "$context.integrationStatus"
      integrationLatency = "$context.integrationLatency"
      wafResponseCode    = "$context.wafResponseCode"
      error              = "$context.error.message"
    })
  }

  tags = var.tags
}

resource "aws_api_gateway_method_settings" "all" {
  #checkov:skip=CKV_AWS_225:Responses carry credentials; they must never be cached.
  rest_api_id = aws_api_gateway_rest_api.api.id
  stage_name  = aws_api_gateway_stage.api.stage_name
  method_path = "*/*"

  settings {
    throttling_rate_limit  = var.throttling_rate_limit
    throttling_burst_limit = var.throttling_burst_limit
    metrics_enabled        = true
    # Execution logs off: they need the account-wide API Gateway logging role and can carry
    # request bodies (tokens). Access logs record every call.
    logging_level      = "OFF"
    data_trace_enabled = false
    caching_enabled    = false
  }
}

resource "aws_wafv2_web_acl_association" "api" {
  count        = var.web_acl_arn == null || var.web_acl_arn == "" ? 0 : 1
  resource_arn = aws_api_gateway_stage.api.arn
  web_acl_arn  = var.web_acl_arn
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${var.name}-api-5xx"
  alarm_description   = "credbroker ${var.name}: the API answered 5xx"
  namespace           = "AWS/ApiGateway"
  metric_name         = "5XXError"
  dimensions          = { ApiName = aws_api_gateway_rest_api.api.name, Stage = aws_api_gateway_stage.api.stage_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 2
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# ==================================================================== Function: token-exchange
# POST /v1/token, GET /v1/health, GET /.well-known/jwks.json, GET /.well-known/openid-configuration,
# the lease API: GET/DELETE /v1/leases/{id}, POST /v1/leases/revoke, POST /v1/admin/aws-role-cutoff.
# Verifies tokens, assumes workload roles, signs tokens; no iam:* (revocations of STS sessions
# and database users are the revoker's).
data "aws_iam_policy_document" "lambda_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "token_exchange" {
  name_prefix        = "${var.name}-token-exchange-"
  description        = "credbroker token-exchange function"
  assume_role_policy = data.aws_iam_policy_document.lambda_trust.json
  tags               = var.tags
}

data "aws_iam_policy_document" "token_exchange" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.token_exchange.arn}:*"]
  }
  statement {
    # Written reason for "*": X-Ray has no resource-level permissions for these two actions
    # (only "*" is valid); they only upload trace segments.
    sid       = "XRay"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
  statement {
    # Leases and replay guards; the lease API's hand-offs and role cut-offs are lease and
    # deny-list writes too. No DeleteItem: nothing here deletes.
    sid       = "Leases"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"]
    resources = local.lease_table_resources
  }
  statement {
    # Only the workload roles under workload_role_path in this account.
    sid       = "AssumeWorkloadRoles"
    actions   = ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
    resources = ["${local.workload_role_prefix}*"]
  }
  statement {
    sid       = "SigningKey"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [aws_secretsmanager_secret.signing_key.arn]
  }
  dynamic "statement" {
    for_each = local.has_secrets_key ? [var.secrets_kms_key_arn] : []
    content {
      sid       = "SecretsKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "token_exchange" {
  name   = "token-exchange"
  role   = aws_iam_role.token_exchange.id
  policy = data.aws_iam_policy_document.token_exchange.json
}

resource "aws_cloudwatch_log_group" "token_exchange" {
  name              = "/aws/lambda/${local.token_exchange_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "aws_lambda_function" "token_exchange" {
  #checkov:skip=CKV_AWS_116:Invoked synchronously by API Gateway; a dead-letter queue only applies to async invokes.
  #checkov:skip=CKV_AWS_117:Needs no VPC resources (STS, DynamoDB, OIDC JWKS on the internet); use endpoint_type PRIVATE to keep callers inside VPCs.
  #checkov:skip=CKV_AWS_173:The environment holds names and ARNs only, no secrets.
  #checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile of your organisation; attach one with code_signing_config_arn outside this module if required.
  function_name    = local.token_exchange_name
  description      = "credbroker token exchange (POST /v1/token, JWKS, discovery, lease API)"
  role             = aws_iam_role.token_exchange.arn
  filename         = var.token_exchange_zip
  source_code_hash = filebase64sha256(var.token_exchange_zip)
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  memory_size      = 256
  timeout          = 10
  layers           = [aws_lambda_layer_version.config.arn]

  reserved_concurrent_executions = var.reserved_concurrency > 0 ? var.reserved_concurrency : -1

  environment {
    variables = local.token_exchange_environment
  }
  tracing_config {
    mode = "Active"
  }
  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.token_exchange.name
  }

  depends_on = [aws_iam_role_policy.token_exchange]
  tags       = var.tags
}

resource "aws_lambda_permission" "token_exchange" {
  # One permission per route, scoped to this API, method and path.
  for_each      = toset(local.token_exchange_routes)
  statement_id  = "api-${replace(replace(lower(each.key), "/[^a-z0-9]+/", "-"), "/^-|-$/", "")}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.token_exchange.function_name
  principal     = "apigateway.amazonaws.com"
  # Path parameters ({id}) are "*" in the source ARN.
  source_arn = "${aws_api_gateway_rest_api.api.execution_arn}/*/${split(" ", each.key)[0]}${replace(split(" ", each.key)[1], "/\\{[^}]+\\}/", "*")}"
}

resource "aws_cloudwatch_metric_alarm" "token_exchange_errors" {
  alarm_name          = "${local.token_exchange_name}-errors"
  alarm_description   = "credbroker ${var.name}: token-exchange failed (errors, crashes, timeouts)"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.token_exchange.function_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 2
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "token_exchange_throttles" {
  alarm_name          = "${local.token_exchange_name}-throttles"
  alarm_description   = "credbroker ${var.name}: token-exchange was throttled"
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  dimensions          = { FunctionName = aws_lambda_function.token_exchange.function_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 2
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# ==================================================================== Function: db-credentials
# POST /v1/db/{policy}/{grant}/credentials (docs/databases.md) and POST /v1/leases/{id}/renew:
# lease actions, the database admin secrets and, for databases in a VPC, database_subnet_ids /
# database_security_group_ids. No signing key, no STS, no IAM.
resource "aws_iam_role" "db_credentials" {
  name_prefix        = "${var.name}-db-credentials-"
  description        = "credbroker db-credentials function"
  assume_role_policy = data.aws_iam_policy_document.lambda_trust.json
  tags               = var.tags
}

data "aws_iam_policy_document" "db_credentials" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.db_credentials.arn}:*"]
  }
  statement {
    # Written reason for "*": X-Ray has no resource-level permissions for these two actions.
    sid       = "XRay"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
  statement {
    # Leases, replay guards and renewals.
    sid       = "Leases"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"]
    resources = local.lease_table_resources
  }
  dynamic "statement" {
    # The database admin passwords: exactly database_admin_secret_arns, nothing when empty.
    for_each = local.has_db_secrets ? [var.database_admin_secret_arns] : []
    content {
      sid       = "DatabaseAdminSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = statement.value
    }
  }
  dynamic "statement" {
    for_each = local.has_secrets_key && local.has_db_secrets ? [var.secrets_kms_key_arn] : []
    content {
      sid       = "SecretsKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.amazonaws.com"]
      }
    }
  }
  dynamic "statement" {
    # Written reason for "*": Lambda creates and deletes the function's network interfaces in
    # database_subnet_ids with the function's role; these EC2 actions take no resource-level
    # scoping (what AWSLambdaVPCAccessExecutionRole grants).
    for_each = local.in_database_vpc ? [1] : []
    content {
      sid       = "VpcNetworkInterfaces"
      actions   = local.eni_actions
      resources = ["*"]
    }
  }
}

locals {
  # The lease table and its two indexes, named (no index wildcard).
  lease_table_resources = [
    aws_dynamodb_table.leases.arn,
    "${aws_dynamodb_table.leases.arn}/index/due",
    "${aws_dynamodb_table.leases.arn}/index/identity",
  ]
  eni_actions = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
  ]
}

resource "aws_iam_role_policy" "db_credentials" {
  name   = "db-credentials"
  role   = aws_iam_role.db_credentials.id
  policy = data.aws_iam_policy_document.db_credentials.json
}

resource "aws_cloudwatch_log_group" "db_credentials" {
  name              = "/aws/lambda/${local.db_credentials_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "aws_lambda_function" "db_credentials" {
  #checkov:skip=CKV_AWS_116:Invoked synchronously by API Gateway; a dead-letter queue only applies to async invokes.
  #checkov:skip=CKV_AWS_117:VPC placement is optional (database_subnet_ids): only needed when the databases are reachable from a VPC alone.
  #checkov:skip=CKV_AWS_173:The environment holds names and ARNs only, no secrets (passwords come from Secrets Manager).
  #checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile of your organisation; attach one with code_signing_config_arn outside this module if required.
  function_name    = local.db_credentials_name
  description      = "credbroker database credentials (POST /v1/db/{policy}/{grant}/credentials)"
  role             = aws_iam_role.db_credentials.arn
  filename         = var.db_credentials_zip
  source_code_hash = filebase64sha256(var.db_credentials_zip)
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  memory_size      = 256
  timeout          = 15
  layers           = [aws_lambda_layer_version.config.arn]

  reserved_concurrent_executions = var.reserved_concurrency > 0 ? var.reserved_concurrency : -1

  environment {
    variables = local.http_environment
  }
  dynamic "vpc_config" {
    for_each = local.in_database_vpc ? [1] : []
    content {
      subnet_ids         = var.database_subnet_ids
      security_group_ids = var.database_security_group_ids
    }
  }
  tracing_config {
    mode = "Active"
  }
  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.db_credentials.name
  }

  lifecycle {
    precondition {
      condition     = !local.in_database_vpc || length(var.database_security_group_ids) > 0
      error_message = "database_subnet_ids needs at least one database_security_group_ids entry."
    }
  }

  depends_on = [aws_iam_role_policy.db_credentials]
  tags       = var.tags
}

resource "aws_lambda_permission" "db_credentials" {
  for_each      = toset(local.db_credentials_routes)
  statement_id  = "api-${replace(replace(lower(each.key), "/[^a-z0-9]+/", "-"), "/^-|-$/", "")}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.db_credentials.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_api_gateway_rest_api.api.execution_arn}/*/${split(" ", each.key)[0]}${replace(split(" ", each.key)[1], "/\\{[^}]+\\}/", "*")}"
}

resource "aws_cloudwatch_metric_alarm" "db_credentials_errors" {
  alarm_name          = "${local.db_credentials_name}-errors"
  alarm_description   = "credbroker ${var.name}: db-credentials failed (errors, crashes, timeouts)"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.db_credentials.function_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 2
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "db_credentials_throttles" {
  alarm_name          = "${local.db_credentials_name}-throttles"
  alarm_description   = "credbroker ${var.name}: db-credentials was throttled"
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  dimensions          = { FunctionName = aws_lambda_function.db_credentials.function_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 2
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# ==================================================================== Function: revoker
# EventBridge: var.revoker_schedule (sweep: end every due lease, including those the lease API
# handed over, and write pending deny lists to IAM) and var.orphan_schedule
# ({"task":"reconcile_orphans"}); docs/leases.md. Safe to run concurrently (every lease is
# claimed with a conditional write). No signing key, no policies; the only function with iam:*.
resource "aws_iam_role" "revoker" {
  name_prefix        = "${var.name}-revoker-"
  description        = "credbroker revoker function"
  assume_role_policy = data.aws_iam_policy_document.lambda_trust.json
  tags               = var.tags
}

data "aws_iam_policy_document" "revoker" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.revoker.arn}:*"]
  }
  statement {
    # Written reason for "*": X-Ray has no resource-level permissions for these two actions.
    sid       = "XRay"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
  statement {
    # Leases, deny lists; DeleteItem: the per-role locks of the deny policy writers.
    sid       = "Leases"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query"]
    resources = local.lease_table_resources
  }
  statement {
    # STS sessions cannot be deleted: the revoker keeps an inline deny policy named
    # credbroker-revocations on each role whose sessions it ends, written from the deny lists in
    # the lease table (never read back). IAM cannot scope these actions by policy name, so they
    # are granted on the workload roles; the code only touches that policy. With
    # workload_permissions_boundary_arn, only on roles carrying that boundary.
    sid       = "RevokeWorkloadSessions"
    actions   = ["iam:PutRolePolicy", "iam:DeleteRolePolicy"]
    resources = ["${local.workload_role_prefix}*"]
    dynamic "condition" {
      for_each = local.has_boundary ? [var.workload_permissions_boundary_arn] : []
      content {
        test     = "StringEquals"
        variable = "iam:PermissionsBoundary"
        values   = [condition.value]
      }
    }
  }
  dynamic "statement" {
    # Dropping database users needs the admin connections: exactly database_admin_secret_arns,
    # nothing when empty.
    for_each = local.has_db_secrets ? [var.database_admin_secret_arns] : []
    content {
      sid       = "DatabaseAdminSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = statement.value
    }
  }
  dynamic "statement" {
    # Written reason for "*": see the db-credentials policy (Lambda's VPC network interfaces).
    for_each = local.in_database_vpc ? [1] : []
    content {
      sid       = "VpcNetworkInterfaces"
      actions   = local.eni_actions
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "revoker" {
  name   = "revoker"
  role   = aws_iam_role.revoker.id
  policy = data.aws_iam_policy_document.revoker.json
}

resource "aws_cloudwatch_log_group" "revoker" {
  name              = "/aws/lambda/${local.revoker_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "aws_lambda_function" "revoker" {
  #checkov:skip=CKV_AWS_116:Scheduled: a failed sweep is repeated by the next tick (the leases stay due in the table), so a dead-letter queue of schedule events would hold nothing to act on.
  #checkov:skip=CKV_AWS_117:VPC placement is optional (database_subnet_ids): only needed when it must reach databases in a VPC.
  #checkov:skip=CKV_AWS_173:The environment holds names only, no secrets.
  #checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile of your organisation; attach one with code_signing_config_arn outside this module if required.
  function_name    = local.revoker_name
  description      = "credbroker revoker (EventBridge schedule: ends due leases, reconciles orphans)"
  role             = aws_iam_role.revoker.arn
  filename         = var.revoker_zip
  source_code_hash = filebase64sha256(var.revoker_zip)
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  memory_size      = 256
  # Each sweep stops claiming 5 s before its deadline; the next tick continues.
  timeout = 60
  layers  = [aws_lambda_layer_version.config.arn]

  reserved_concurrent_executions = var.reserved_concurrency > 0 ? var.reserved_concurrency : -1

  environment {
    variables = local.revoker_environment
  }
  dynamic "vpc_config" {
    for_each = local.in_database_vpc ? [1] : []
    content {
      subnet_ids         = var.database_subnet_ids
      security_group_ids = var.database_security_group_ids
    }
  }
  tracing_config {
    mode = "Active"
  }
  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.revoker.name
  }

  depends_on = [aws_iam_role_policy.revoker]
  tags       = var.tags
}

locals {
  revoker_schedules = {
    sweep             = { schedule = var.revoker_schedule, input = null, description = "credbroker revoker: end every due lease" }
    reconcile-orphans = { schedule = var.orphan_schedule, input = jsonencode({ task = "reconcile_orphans" }), description = "credbroker revoker: remove backend credentials no live lease names" }
  }
}

resource "aws_cloudwatch_event_rule" "revoker" {
  for_each            = local.revoker_schedules
  name                = "${local.revoker_name}-${each.key}"
  description         = each.value.description
  schedule_expression = each.value.schedule
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "revoker" {
  for_each = local.revoker_schedules
  rule     = aws_cloudwatch_event_rule.revoker[each.key].name
  arn      = aws_lambda_function.revoker.arn
  input    = each.value.input
}

resource "aws_lambda_permission" "revoker" {
  for_each      = local.revoker_schedules
  statement_id  = "events-${each.key}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.revoker.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.revoker[each.key].arn
}

resource "aws_cloudwatch_metric_alarm" "revoker_errors" {
  alarm_name          = "${local.revoker_name}-errors"
  alarm_description   = "credbroker ${var.name}: the revoker failed (lease store errors, crashes, timeouts)"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.revoker.function_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 2
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# The revoker's lease alarms, from its EMF line (shared/src/metrics.rs): dimension
# Function = AWS_LAMBDA_FUNCTION_NAME; any count above 0 alarms.
locals {
  revoker_lease_alarms = {
    irrevocable           = { metric = "LeasesIrrevocable", what = "a lease became IRREVOCABLE (docs/leases.md, runbook)" }
    unreadable            = { metric = "LeasesUnreadable", what = "the revoker met a due lease record it cannot read (docs/architecture.md, Lease records)" }
    deny-list-nearly-full = { metric = "DenyListNearlyFull", what = "a role's STS deny list nearly fills its inline policy (docs/leases.md, runbook)" }
    deny-list-fallback    = { metric = "DenyListFallbacks", what = "a role's STS deny list overflowed: every session of the role issued before then is denied (docs/leases.md, runbook)" }
  }
}

resource "aws_cloudwatch_metric_alarm" "revoker_leases" {
  for_each            = local.revoker_lease_alarms
  alarm_name          = "${var.name}-leases-${each.key}"
  alarm_description   = "credbroker ${var.name}: ${each.value.what}"
  namespace           = "credbroker"
  metric_name         = each.value.metric
  dimensions          = { Function = aws_lambda_function.revoker.function_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

moved {
  from = aws_cloudwatch_metric_alarm.leases_irrevocable
  to   = aws_cloudwatch_metric_alarm.revoker_leases["irrevocable"]
}
