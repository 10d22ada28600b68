output "api_url" {
  description = "Base URL of the deployed API."
  value       = module.credbroker.api_url
}

output "workload_role_arn" {
  description = "Role to name in a policy's aws_role grant."
  value       = aws_iam_role.workload.arn
}
