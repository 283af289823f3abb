# Homebrew formula for imds-tun, in a tap's layout (packaging/homebrew is the tap's root:
# `brew tap NAME path/to/packaging/homebrew` then `brew install NAME/imds-tun`).
# Checked here with `ruby -c` only (tests/deploy/deploy_launchd.rs): no Mac has run it. It builds
# from source with cargo, without the default `sts` feature (aws-lc-sys's C under the AWS SDK
# has not been built for macOS here), and runs as the launchd service that
# packaging/com.imds-tun.plist describes (root, serving as nobody, kept alive), which it also
# installs with the formula's own path in it.
class ImdsTun < Formula
  desc "EC2 instance metadata service on 169.254.169.254 through a TUN device"
  # The project publishes no source address yet (Cargo.toml has no `repository`): a release
  # fills in url and sha256 (`sha256sum` of the tarball) before the tap is published.
  homepage "https://example.invalid/imds-tun"
  url "https://example.invalid/imds-tun/imds-tun-0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license any_of: ["MIT", "Apache-2.0"]

  depends_on "rust" => :build

  def install
    system "cargo", "install", "--locked", "--no-default-features", *std_cargo_args
    man1.mkpath
    (man1/"imds-tun.1").write Utils.safe_popen_read(bin/"imds-tun", "man")
    generate_completions_from_executable(bin/"imds-tun", "completions")
    plist = (buildpath/"packaging/com.imds-tun.plist").read
    (prefix/"com.imds-tun.plist").write plist.sub("/usr/local/bin/imds-tun", "#{opt_bin}/imds-tun")
  end

  # What packaging/com.imds-tun.plist says, as Homebrew's service: `sudo brew services start
  # imds-tun` (creating the utun needs root; imds-tun then serves as nobody).
  service do
    run [opt_bin/"imds-tun", "--user", "nobody"]
    require_root true
    keep_alive true
    log_path "/var/log/imds-tun.log"
    error_log_path "/var/log/imds-tun.log"
  end

  def caveats
    <<~EOS
      imds-tun needs root to create its utun device:
        sudo imds-tun                      # one shot
        sudo brew services start imds-tun  # as a launchd service (root, serving as nobody)
      The launchd plist is also at #{opt_prefix}/com.imds-tun.plist for launchctl.
    EOS
  end

  test do
    assert_match "imds-tun #{version}", shell_output("#{bin}/imds-tun --version")
  end
end
