"""A VPC whose workloads reach AWS only through VPC endpoints: no NAT, no internet gateway."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Fn, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.encryption import encrypted_log_group
from stacks.endpoint_policies import (
    any_call_of_own_account,
    ecr_pulls_of_own_account,
    s3_statements,
)
from stacks.nag import acknowledge, acknowledge_generated_policy
from stacks.trust import confine_generated_trust

BASE_ENDPOINTS = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
}
"""What a task needs: pull its image (ECR + the S3 gateway for layers), log, get credentials."""

ECS_INSTANCE_ENDPOINTS = {
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,
    "EcsAgent": ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
    "EcsTelemetry": ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
}
"""What the ECS agent on an EC2 (GPU) container instance needs to register and report."""

PARAMETER_ENDPOINTS = {"Ssm": ec2.InterfaceVpcEndpointAwsService.SSM}
"""What the ECS agent needs to inject an SSM parameter into a task (a hospital's site policy)."""

ECR_ENDPOINTS = frozenset({"EcrApi", "EcrDocker"})
"""The endpoints whose policy names the image repositories instead of any resource."""

NO_EGRESS = [
    {
        "CidrIp": "255.255.255.255/32",
        "Description": "Disallow all traffic",
        "FromPort": 252,
        "IpProtocol": "icmp",
        "ToPort": 86,
    }
]
"""CDK's rule for a group without outbound rules (EC2 adds allow-all to a group with none)."""


class PrivateNetwork(Construct):
    """Isolated private subnets in two zones, an S3 gateway endpoint and interface endpoints.

    Nothing in the VPC has a route to the internet. The only inbound security-group rules are
    HTTPS into the interface endpoints from the workload security groups passed to
    ``admit_to_endpoints``; workloads themselves accept nothing and send only HTTPS; endpoints
    send nothing. Every endpoint's policy admits only this account's principals
    (``limit_endpoints_to_own_account``, ``limit_s3_to``). Flow logs of all traffic go to a log
    group encrypted with ``logs_key``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cidr: str,
        zones: Sequence[str] | None,
        logs_key: kms.IKey,
        log_retention: logs.RetentionDays,
        with_ecs_instances: bool,
        with_parameters: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = self._vpc(cidr, zones)
        if zones is None:
            self._let_cloudformation_pick_zones()
        self._close_default_security_group()
        self._log_flows(logs_key, log_retention)
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.s3_endpoint = self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.subnets]
        )
        services = dict(BASE_ENDPOINTS)
        if with_ecs_instances:
            services.update(ECS_INSTANCE_ENDPOINTS)
        if with_parameters:
            services.update(PARAMETER_ENDPOINTS)
        self.interface_endpoints = {
            name: self.vpc.add_interface_endpoint(
                name, service=service, subnets=self.subnets, open=False, private_dns_enabled=True
            )
            for name, service in services.items()
        }
        self.endpoints = list(self.interface_endpoints.values())
        for endpoint in self.endpoints:
            self._send_nothing_from(endpoint)

    @staticmethod
    def _send_nothing_from(endpoint: ec2.InterfaceVpcEndpoint) -> None:
        """An endpoint only answers; its group (CDK's, open outbound by default) sends nothing."""
        for group in endpoint.connections.security_groups:
            cfn_group = group.node.default_child
            assert isinstance(cfn_group, ec2.CfnSecurityGroup)
            cfn_group.add_property_override("SecurityGroupEgress", NO_EGRESS)

    def _vpc(self, cidr: str, zones: Sequence[str] | None) -> ec2.Vpc:
        """Isolated private subnets only (``/22`` per zone), no NAT gateway."""
        return ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            availability_zones=list(zones or Stack.of(self).availability_zones),
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=22
                )
            ],
            restrict_default_security_group=False,
        )

    def _log_flows(self, logs_key: kms.IKey, log_retention: logs.RetentionDays) -> None:
        """Flow logs of all traffic into an encrypted ``FlowLogs`` group."""
        flow_log_group = encrypted_log_group(
            self, "FlowLogs", key=logs_key, retention=log_retention
        )
        flow_log = self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        if flow_log.iam_role is not None:
            acknowledge_generated_policy(flow_log.iam_role)
            stack = Stack.of(self)
            confine_generated_trust(
                flow_log.iam_role,
                f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}:vpc-flow-log/*",
            )

    def _let_cloudformation_pick_zones(self) -> None:
        """Place subnet i in the account's i-th zone (``Fn::GetAZs``), resolved at deploy.

        The VPC construct needs zone names at synthesis; asking AWS for them would need
        credentials, and writing ``REGIONa`` into the template would pin every account to zone
        names that may lack the GPU instance type. Set ``availability_zones`` in the context
        to choose the zones explicitly.
        """
        for index, subnet in enumerate(self.vpc.isolated_subnets):
            cfn_subnet = subnet.node.default_child
            assert isinstance(cfn_subnet, ec2.CfnSubnet)
            cfn_subnet.add_property_override("AvailabilityZone", Fn.select(index, Fn.get_azs()))

    def _close_default_security_group(self) -> None:
        """Acknowledge the default security group instead of deploying a Lambda to empty it.

        ``restrict_default_security_group`` would add a custom-resource Lambda (with its own
        role and findings) only to delete two rules of a group that nothing here uses: every
        task, instance and endpoint gets its own group.
        """
        acknowledge(
            self.vpc,
            "HIPAA.Security-VPCDefaultSecurityGroupClosed",
            "No network interface is ever placed in the default security group: every task, "
            "instance and endpoint gets its own group, and the subnets have no internet route.",
        )

    def workload_security_group(
        self, scope: Construct, construct_id: str, *, description: str
    ) -> ec2.SecurityGroup:
        """A group for a workload in this VPC: no inbound rule, HTTPS out only.

        HTTPS goes to the interface endpoints' groups and, for the S3 gateway endpoint, to any
        address: the gateway's prefix list is only known at deploy, and the subnets have no
        route anywhere else, so that rule reaches S3 through the gateway and nothing more.
        """
        group = ec2.SecurityGroup(
            scope, construct_id, vpc=self.vpc, description=description, allow_all_outbound=False
        )
        group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to S3 through the gateway endpoint"
        )
        self.admit_to_endpoints(group)
        return group

    def admit_to_endpoints(self, workload: ec2.ISecurityGroup) -> None:
        """Allow HTTPS from ``workload`` into every interface endpoint (and out of ``workload``)."""
        for endpoint in self.endpoints:
            endpoint.connections.allow_default_port_from(workload, "HTTPS from fedsilo workloads")

    def limit_s3_to(self, bucket_arns: Sequence[str]) -> None:
        """Restrict what the S3 gateway endpoint reaches: the given buckets and ECR's layers.

        A task that is compromised cannot copy data into an S3 bucket of another account
        through this VPC, nor can credentials of another account be used through it.
        """
        for statement in s3_statements(self, bucket_arns):
            self.s3_endpoint.add_to_policy(statement)

    def limit_endpoints_to_own_account(self, image_repository_arns: Sequence[str]) -> None:
        """Each interface endpoint admits this account's principals only; ECR, only pulls.

        Credentials of another account that reach a task cannot be used through the VPC.
        """
        for name, endpoint in self.interface_endpoints.items():
            statements = (
                ecr_pulls_of_own_account(self, image_repository_arns)
                if name in ECR_ENDPOINTS
                else any_call_of_own_account(self)
            )
            for statement in statements:
                endpoint.add_to_policy(statement)
