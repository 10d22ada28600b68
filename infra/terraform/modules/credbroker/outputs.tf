output "api_url" {
  description = "Base URL of the REST API stage (use as public_url, or point a custom domain at it)."
  value       = aws_api_gateway_stage.api.invoke_url
}

output "api_id" {
  description = "REST API id (LocalStack: http://127.0.0.1:4566/_aws/execute-api/<api_id>/<stage>/...)."
  value       = aws_api_gateway_rest_api.api.id
}

output "stage_name" {
  description = "API stage name."
  value       = aws_api_gateway_stage.api.stage_name
}

output "lease_table_name" {
  description = "DynamoDB lease table."
  value       = aws_dynamodb_table.leases.name
}

output "token_exchange_function_name" {
  description = "token-exchange Lambda function."
  value       = aws_lambda_function.token_exchange.function_name
}

output "db_credentials_function_name" {
  description = "db-credentials Lambda function."
  value       = aws_lambda_function.db_credentials.function_name
}

output "revoker_function_name" {
  description = "revoker Lambda function."
  value       = aws_lambda_function.revoker.function_name
}

output "revoker_role_arn" {
  description = "The revoker's role (edits the credbroker-revocations policy of the workload roles)."
  value       = aws_iam_role.revoker.arn
}

output "token_exchange_role_arn" {
  description = "Principal that workload roles must trust (sts:AssumeRole, sts:TagSession, sts:SetSourceIdentity)."
  value       = aws_iam_role.token_exchange.arn
}

output "signing_key_secret_arn" {
  description = "Secrets Manager secret holding the token signing key (Ed25519 seed)."
  value       = aws_secretsmanager_secret.signing_key.arn
}

output "config_layer_arn" {
  description = "Configuration layer version (policies and broker config) attached to the functions."
  value       = aws_lambda_layer_version.config.arn
}
