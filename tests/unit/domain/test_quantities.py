import pytest

from kubeline.domain import quantities


@pytest.mark.parametrize(("text", "cores"), [("100m", 0.1), ("0.5", 0.5), ("2", 2.0), (1, 1.0)])
def test_cpu(text, cores):
    assert quantities.cpu_cores(text) == pytest.approx(cores)


@pytest.mark.parametrize(("text", "size"), [("1Gi", 2**30), ("256Mi", 256 * 2**20), ("1G", 10**9), ("129e6", 129 * 10**6), ("512", 512)])
def test_memory(text, size):
    assert quantities.memory_bytes(text) == size


@pytest.mark.parametrize("text", ["", "1GB", "ten", "-1", "1 Gi", "0x10"])
def test_bad_quantity_names_the_value(text):
    with pytest.raises(ValueError, match="is not a quantity"):
        quantities.parse(text)


def test_milli_memory_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="'m' means milli"):
        quantities.memory_bytes("512m")


@pytest.mark.parametrize(("docker", "k8s"), [("512m", "512Mi"), ("512M", "512Mi"), ("1G", "1Gi"), ("1g", "1Gi"),
                                              ("2048", "2048"), ("1.5g", str(int(1.5 * 2**30))), ("256Mi", "256Mi")])
def test_docker_sizes(docker, k8s):
    assert quantities.docker_memory_to_quantity(docker) == k8s


def test_format_bytes():
    assert quantities.format_bytes(2**30) == "1Gi"
    assert quantities.format_bytes(1000) == "1000B"
