#!/usr/bin/perl
# api-validate.pl ORACLE_DIR - judge HTTP API requests with Proxmox VE's own
# API schema, for the stand-in API server of testdata/pve.
#
# A persistent process: one JSON object a line on stdin
#   {"method":"POST","path":"/nodes/pve/lxc","params":{...}}
# one JSON object a line on stdout
#   {"known":true,"ok":true,"handler":"create_vm"}
#   {"known":true,"ok":false,"handler":"create_vm","message":"Parameter verification failed.",
#    "errors":{"hostname":"invalid format - ..."}}
#   {"known":false} (no handler of the loaded PVE::API2 classes serves the path)
#
# The method is found as PVE's REST server finds it (find_handler, which
# also fills the path's parameters: vmid, storage, ...), the node is the one
# the URL names (pve-manager's PVE::API2::Nodes mounts the classes below
# under /nodes/{node}), and the parameters are checked exactly as
# PVE::RESTHandler::handle does before running a method:
# PVE::JSONSchema::validate($params, $info->{parameters}).
#
# The @INC set-up and stubs are validate-conf.pl's (the oracle folder's
# README): unmodified pve-container / pve-storage / pve-access-control /
# pve-common. PVE_CONTAINER_SRC picks the pve-container release.
#
# Served here (mount point => class):
#   /nodes/{node}/lxc      PVE::API2::LXC (with ::Config, ::Status, ...)
#   /nodes/{node}/storage  PVE::API2::Storage::Status (with ::Content)
#   /access                PVE::API2::AccessControl (ticket)
# Not in the oracle (pve-manager): /version, /cluster/*, /nodes,
# /nodes/{node}/tasks: the stand-in checks those by hand.

use strict;
use warnings;

my $BASE;
BEGIN {
    $BASE = shift(@ARGV) // die "usage: api-validate.pl ORACLE_DIR\n";
    my @src = map { "$BASE/src/$_/src" }
        qw(pve-common pve-cluster pve-guest-common pve-storage pve-access-control
           pve-firewall pve-ha-manager pve-apiclient pve-network qemu-server);
    my $ct = $ENV{PVE_CONTAINER_SRC} // "$BASE/src/pve-container/src";
    unshift @INC, "$BASE/stubs", $ct, @src;
    $SIG{__WARN__} = sub { print STDERR $_[0] if $_[0] !~ /is experimental/ };
}

# Anything PVE's modules print goes to stderr: stdout carries only answers.
my $OUT;
BEGIN {
    open($OUT, '>&', \*STDOUT) or die "dup stdout: $!\n";
    open(STDOUT, '>&', \*STDERR) or die "redirect stdout: $!\n";
}

use JSON;
use PVE::JSONSchema;
use PVE::API2::LXC;
use PVE::API2::Storage::Status;
use PVE::API2::AccessControl;

$SIG{__WARN__} = sub { print STDERR $_[0] if $_[0] !~ /is experimental/ };

my $json = JSON->new->canonical->allow_nonref->utf8;
$OUT->autoflush(1);

my @mounts = (
    [qr{^/nodes/([^/]+)/lxc(/.*)?$}, 'PVE::API2::LXC', 'node'],
    [qr{^/nodes/([^/]+)/storage(/.*)?$}, 'PVE::API2::Storage::Status', 'node'],
    [qr{^/access()(/.*)$}, 'PVE::API2::AccessControl', undef],
);

sub judge {
    my ($req) = @_;
    my ($method, $path, $params) = @$req{qw(method path params)};
    $params //= {};
    for my $m (@mounts) {
        my ($re, $class, $pname) = @$m;
        next if $path !~ $re;
        my ($pval, $rel) = ($1, $2 // '');
        my $uri_param = {};
        my ($handler, $info) = $class->find_handler($method, $rel, $uri_param);
        return { known => JSON::false } if !$handler || !$info;
        $uri_param->{$pname} = $pval if defined($pname);
        # Path parameters win over body ones, as in PVE's REST server.
        my $all = { %$params, %$uri_param };
        eval { PVE::JSONSchema::validate($all, $info->{parameters}) };
        my $err = $@;
        return { known => JSON::true, ok => JSON::true, handler => $info->{name} } if !$err;
        if (ref($err) && ref($err->{errors}) eq 'HASH') {
            my $msg = "$err->{msg}";
            $msg =~ s/\n+$//;
            return { known => JSON::true, ok => JSON::false, handler => $info->{name}, message => $msg,
                errors => { map { my $e = $err->{errors}->{$_}; $e =~ s/\n+$//; ($_ => $e) } keys %{ $err->{errors} } } };
        }
        my $msg = "$err";
        $msg =~ s/\n+$//;
        return { known => JSON::true, ok => JSON::false, handler => $info->{name}, message => $msg, errors => {} };
    }
    return { known => JSON::false };
}

print $OUT $json->encode({ ready => 1, pve_container => ($ENV{PVE_CONTAINER_SRC} // '') }), "\n";
while (my $line = <STDIN>) {
    chomp $line;
    next if $line eq '';
    my $res = eval { judge($json->decode($line)) };
    if (my $err = $@) {
        $err =~ s/\n+$//;
        $res = { error => "$err" };
    }
    print $OUT $json->encode($res), "\n";
}
